// The FP4 expert tiles (cuda_ops.h: fp4_tile_cuda): every 32-column piece of codes and its scale
// byte land where the layout says (tiles of 16 rows × 128 columns, 64 code bytes and 4 scale bytes
// a tile row, tiles along the columns, then down the rows), each code word as fp4_tile_word writes
// it, so that the expert kernels' tile_pairs gives columns 2i, 2i + 1 as pair i (checked for every
// 32-bit word on the device, and on the tiles as the kernels' own function decodes them), the
// padding columns of the last tile get zero codes and the scale 1 (byte 127: the decode products
// read them), and shapes the tiles cannot hold are refused with an error.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "core/error.h"
#include "cuda/buffer.h"
#include "cuda/check.h"
#include "ops/cuda_ops.h"
#include "ops/moe_experts.cuh"

namespace {

using namespace dsv4;

// The bf16 pair that tile_pairs must give for codes lo (low half) and hi: the nibble (s e1 e0 m) at
// bf16 bits 15 (sign) and 8, 7, 6 (value e2m1 · 2^-126), the form the scale multiply expects.
__host__ __device__ constexpr uint32_t placed(uint32_t lo, uint32_t hi) {
  auto half = [](uint32_t n) { return ((n >> 3) & 1u) << 15 | (n & 7u) << 6; };
  return half(lo & 15u) | half(hi & 15u) << 16;
}

// Every 32-bit checkpoint word q (columns 0 .. 7, low nibble first): pair i of tile_pairs(fp4_tile_word(q))
// against columns 2i, 2i + 1 of q; counts the mismatches, keeps the first word.
__global__ void every_word_kernel(cuda::expert::TileEncoder enc, unsigned long long* mismatches, uint32_t* first) {
  for (uint64_t i = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; i < (1ull << 32);
       i += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    const uint32_t q = static_cast<uint32_t>(i);
    const cuda::expert::TilePairs t = cuda::expert::tile_pairs(cuda::expert::fp4_tile_word(q, enc));
    const bool same = t.p[0] == placed(q, q >> 4) && t.p[1] == placed(q >> 8, q >> 12) &&
                      t.p[2] == placed(q >> 16, q >> 20) && t.p[3] == placed(q >> 24, q >> 28);
    if (!same && atomicAdd(mismatches, 1ull) == 0) *first = q;
  }
}

// Each tile word's four pairs as the expert kernels decode them.
__global__ void decode_tiles_kernel(const uint32_t* words, int64_t n, uint32_t* pairs) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const cuda::expert::TilePairs t = cuda::expert::tile_pairs(words[i]);
    for (int j = 0; j < 4; ++j) pairs[4 * i + j] = t.p[j];
  }
}

TEST(Fp4Tiles, EveryWordDecodesToItsColumnsInOrder) {
  cuda::DeviceArray<unsigned long long> mis(std::vector<unsigned long long>{0});
  cuda::DeviceArray<uint32_t> first(std::vector<uint32_t>{0});
  every_word_kernel<<<1024, 256>>>(cuda::expert::kTileEncoder, mis.get(), first.get());
  DSV4_CUDA_CHECK(cudaGetLastError());
  EXPECT_EQ(mis.to_host()[0], 0ull) << "first word that decodes wrong: 0x" << std::hex << first.to_host()[0];
}

TEST(Fp4Tiles, PiecesLandWhereTheLayoutSays) {
  const int64_t rows = 48;
  const int cols = 160;  // one whole tile of columns and a quarter of a second (3 pieces of padding)
  const int64_t padded = cuda::fp4_tiled_cols(cols);
  ASSERT_EQ(padded, 256);
  std::mt19937 rng(3);
  std::vector<uint8_t> codes(rows * cols / 2), scales(rows * cols / 32);
  for (uint8_t& c : codes) c = static_cast<uint8_t>(rng());
  for (uint8_t& s : scales) s = static_cast<uint8_t>(rng());
  cuda::DeviceArray<uint8_t> din(codes), sin(scales);
  cuda::DeviceArray<uint8_t> dt(std::vector<uint8_t>(rows * padded / 2, 0xab)),
      st(std::vector<uint8_t>(rows * padded / 32, 0xcd));
  cuda::fp4_tile_cuda(din.get(), sin.get(), rows, cols, dt.get(), st.get(), 0);
  const std::vector<uint8_t> tc = dt.to_host(), ts = st.to_host();
  cuda::DeviceArray<uint32_t> dp(tc.size());  // 4 pairs a 4-byte word
  decode_tiles_kernel<<<64, 256>>>(reinterpret_cast<const uint32_t*>(dt.get()), static_cast<int64_t>(tc.size() / 4),
                                   dp.get());
  DSV4_CUDA_CHECK(cudaGetLastError());
  const std::vector<uint32_t> pairs = dp.to_host();
  std::vector<bool> code_set(tc.size()), scale_set(ts.size());
  const int64_t tiles_per_row = padded / 128;
  for (int64_t r = 0; r < rows; ++r)
    for (int c = 0; c < cols; c += 32) {
      const int64_t tile = (r / 16) * tiles_per_row + c / 128;
      const int64_t at = tile * 1024 + (r % 16) * 64 + (c % 128) / 2;
      // Word j of the piece (columns c + 8j ..): pair i as the kernels decode it holds columns
      // 2i and 2i + 1.
      for (int j = 0; j < 4; ++j)
        for (int i = 0; i < 4; ++i) {
          const uint8_t in = codes[r * cols / 2 + c / 2 + 4 * j + i];
          ASSERT_EQ(pairs[4 * ((at / 4) + j) + i], placed(in, in >> 4))
              << "row " << r << " columns " << c + 8 * j + 2 * i << ", +1";
        }
      for (int b = 0; b < 16; ++b) code_set[at + b] = true;
      const int64_t sat = tile * 64 + (r % 16) * 4 + (c % 128) / 32;
      ASSERT_EQ(ts[sat], scales[r * cols / 32 + c / 32]) << "scale of row " << r << " column " << c;
      scale_set[sat] = true;
    }
  // Every byte is written (the buffers started as 0xab and 0xcd): padding as zero codes, scale 127.
  for (size_t i = 0; i < tc.size(); ++i)
    if (!code_set[i]) ASSERT_EQ(tc[i], 0) << "padding code byte " << i;
  for (size_t i = 0; i < ts.size(); ++i)
    if (!scale_set[i]) ASSERT_EQ(ts[i], 127) << "padding scale byte " << i;
}

TEST(Fp4Tiles, RefusesShapesTheTilesCannotHold) {
  cuda::DeviceArray<uint8_t> c(std::vector<uint8_t>(4096, 0)), s(std::vector<uint8_t>(256, 0));
  EXPECT_THROW(cuda::fp4_tile_cuda(c.get(), s.get(), 24, 64, c.get(), s.get(), 0), Error);  // rows % 16
  EXPECT_THROW(cuda::fp4_tile_cuda(c.get(), s.get(), 16, 48, c.get(), s.get(), 0), Error);  // cols % 32
  EXPECT_THROW(cuda::fp4_tile_cuda(c.get() + 8, s.get(), 16, 64, c.get(), s.get(), 0), Error);  // alignment
}

}  // namespace
