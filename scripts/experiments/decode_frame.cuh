// decode_frame.cu's program: the chain's stages, their weight entries and how blocks share them
// (a development experiment, not part of dsv4). The kernel and the host's check both read it.
#pragma once
#include <cstdint>

// -DCONSUMER_WGS=2: two consumer warpgroups, each taking every other entry of a unit (its products
// as in -DPIPE=1) from a ring of its own (2 of the 5 slots each: sharing one ring, a warpgroup two
// entries ahead passed a parity wait early), their totals added at the unit's end (other bits than
// one warpgroup's). 1 (the default): one warpgroup, warps 0 .. 3.
#ifndef CONSUMER_WGS
#define CONSUMER_WGS 1
#endif
constexpr int kConsumerGroups = CONSUMER_WGS;
constexpr int kConsumers = 128 * kConsumerGroups;
constexpr int kConsumerWarps = kConsumers / 32;
constexpr int kThreads = kConsumers + 32;  // and the producer warp, the last
constexpr int kEntryCols = 512;            // an entry: 64 rows × 512 columns of e4m3, core-matrix order
constexpr int kEntryCodes = 64 * kEntryCols;
constexpr int kEntryBytes = kEntryCodes + 16;  // + the four 128-column blocks' scales (floats)
constexpr int kSlotStride = kEntryCodes + 128;
constexpr int kMaxSlots = 5;
constexpr int kMaxKu = 4096;  // a unit's columns (its x: column 0 of an N = 8 B tile, 8 bytes a column)
constexpr int kMaxStages = 48;
constexpr float kEps = 1e-6f;

struct Stage {
  int64_t w_off;    // bytes: the stage's entries, unit-major (unit u's entries at u · E)
  int64_t out_off;  // floats: its partial outputs [S][R]
  int R, K, S, G;   // rows; input columns a row; splits of K; row groups (group g reads x[g K, (g + 1) K))
  int norm;         // x / rms(x) over its G K inputs before the quantization
  int spin_ns;      // a latency stage before this one
  int spins;        // latency stages up to and including this one
};
// Stage 0 is the chain's input: R floats at out_off (S = 1), no weights.
struct Program {
  Stage st[kMaxStages];
  int n;
  const uint8_t* w;
  float* out;
  unsigned* arrived;  // blocks done, summed over the stages (and over earlier runs: arrived_base)
  unsigned* spun;     // latency stages done (spun_base before this run)
  unsigned arrived_base, spun_base;
  int in_flight;  // at most this many of a block's copies outstanding (INFLIGHT; the ring's depth if more)
  int in_flight_spun;  // the same for a stage after a latency stage (INFLIGHT_SPUN; INFLIGHT if unset)
  int l2_ahead;   // L2_AHEAD=1: a stage after a latency stage has its entries past the ring requested into L2
  int warm;       // WARM=1: a dry pass of the stage's input code before the barrier (instruction cache)
  int l2_window;  // L2_WINDOW=n: every stage reads entries 0 .. n − 1 over and over (L2 hits, no HBM stream)
};
// Byte offset of a stage's e-th entry (counted over its units in order).
__host__ __device__ inline int64_t entry_offset(const Program& p, const Stage& st, int64_t e) {
  return p.l2_window > 0 ? (e % p.l2_window) * kEntryBytes : st.w_off + e * kEntryBytes;
}

__host__ __device__ inline int units_of(const Stage& s) { return s.R / 64 * s.S; }
__host__ __device__ inline int entries_of(const Stage& s) { return s.K / s.S / kEntryCols; }
// Unit u's first input column: its row group's inputs, then its split's share of K.
__host__ __device__ inline int unit_base(const Stage& s, int u) {
  return u / s.S * 64 / (s.R / s.G) * s.K + u % s.S * (s.K / s.S);
}
__host__ __device__ inline int unit_lo(const Stage& s, int b, int nb) {
  return static_cast<int>(static_cast<int64_t>(units_of(s)) * b / nb);
}
