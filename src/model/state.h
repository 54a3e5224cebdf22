// Per-sequence decoding state (model.md §11). Per block: the window ring (the last W
// key/values, slot = position mod W), every compressed entry made so far, and each
// compressor's pending rows (u and z of the incomplete block, plus the previous block
// when m = 4). Memory grows with the compressed entries only.
#pragma once
#include <cstdint>
#include <vector>

#include "io/config.h"

namespace dsv4 {

struct CompressorState {
  int64_t first_pos = 0;   // position of the first kept row
  std::vector<float> u, z; // kept rows [count, c·d]
};

struct AttnState {
  std::vector<float> window;       // ring [W, Dh]
  std::vector<float> entries;      // [count, Dh] main compressed entries (m > 0)
  std::vector<float> idx_entries;  // [count, DI] indexer entries (m = 4)
  CompressorState comp, idx_comp;
  size_t bytes() const;
};

struct SequenceState {
  std::vector<AttnState> layers;  // one per block
  std::vector<AttnState> mtp;     // one per MTP block
  int64_t pos = 0;                // tokens consumed by the main model
  int64_t mtp_pos = 0;            // tokens consumed by the MTP block(s)

  static SequenceState create(const ModelConfig& c);
  size_t bytes() const;  // what this state holds now (capacity excluded)
};

// Bytes a sequence state holds in the main model's blocks after `tokens` tokens, from
// the same layout the state uses: the window rings (fixed), the compressors' pending
// rows (bounded), and the compressed entries, which grow with the context.
struct StateFootprint {
  size_t window_bytes = 0;       // all window rings
  size_t max_pending_bytes = 0;  // compressor rows of incomplete (and, for m = 4, previous) blocks
  double bytes_per_token = 0;    // compressed entries (main + indexer), amortized per token
  size_t total(int64_t tokens) const;  // exact, as SequenceState::bytes() of the main blocks
  const ModelConfig* config = nullptr;
};
StateFootprint state_footprint(const ModelConfig& c);

}  // namespace dsv4
