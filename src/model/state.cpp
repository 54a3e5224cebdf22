#include "model/state.h"

namespace dsv4 {

namespace {
// The sizes a block's state uses: one definition for allocation and accounting.
struct BlockLayout {
  int64_t window_floats, entry_floats, idx_entry_floats, pending_rows, pending_width, idx_pending_width;
};
BlockLayout block_layout(const ModelConfig& c, int m) {
  BlockLayout b{};
  b.window_floats = static_cast<int64_t>(c.sliding_window) * c.head_dim;
  if (m > 0) {
    b.entry_floats = c.head_dim;
    b.pending_rows = m == 4 ? 2 * m : m;  // at most: previous block + the incomplete one
    b.pending_width = (m == 4 ? 2 : 1) * c.head_dim;
  }
  if (m == 4) {
    b.idx_entry_floats = c.index_head_dim;
    b.idx_pending_width = 2 * c.index_head_dim;
  }
  return b;
}
}  // namespace

size_t AttnState::bytes() const {
  size_t floats = window.size() + entries.size() + idx_entries.size() + comp.u.size() + comp.z.size() +
                  idx_comp.u.size() + idx_comp.z.size();
  return floats * sizeof(float);
}

SequenceState SequenceState::create(const ModelConfig& c) {
  SequenceState s;
  auto make = [&](int m) {
    AttnState a;
    a.window.assign(block_layout(c, m).window_floats, 0.0f);
    return a;
  };
  for (int l = 0; l < c.num_hidden_layers; ++l) s.layers.push_back(make(c.ratio(l)));
  for (int i = 0; i < c.num_nextn_predict_layers; ++i) s.mtp.push_back(make(c.ratio(c.num_hidden_layers + i)));
  return s;
}

size_t SequenceState::bytes() const {
  size_t b = 0;
  for (const AttnState& a : layers) b += a.bytes();
  for (const AttnState& a : mtp) b += a.bytes();
  return b;
}

// Rows a compressor keeps after `tokens` tokens: the incomplete block, plus the last
// complete one when blocks overlap (m = 4).
static int64_t pending_rows(int m, int64_t tokens) {
  int64_t rows = tokens % m;
  if (m == 4 && tokens >= m) rows += m;
  return rows;
}

StateFootprint state_footprint(const ModelConfig& c) {
  StateFootprint f;
  f.config = &c;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const int m = c.ratio(l);
    BlockLayout b = block_layout(c, m);
    f.window_bytes += sizeof(float) * b.window_floats;
    f.max_pending_bytes += sizeof(float) * b.pending_rows * 2 * (b.pending_width + b.idx_pending_width);
    if (m > 0) f.bytes_per_token += sizeof(float) * double(b.entry_floats + b.idx_entry_floats) / m;
  }
  return f;
}

size_t StateFootprint::total(int64_t tokens) const {
  const ModelConfig& c = *config;
  size_t bytes = window_bytes;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const int m = c.ratio(l);
    if (m == 0) continue;
    BlockLayout b = block_layout(c, m);
    bytes += sizeof(float) * (tokens / m) * (b.entry_floats + b.idx_entry_floats);
    bytes += sizeof(float) * pending_rows(m, tokens) * 2 * (b.pending_width + b.idx_pending_width);
  }
  return bytes;
}

}  // namespace dsv4
