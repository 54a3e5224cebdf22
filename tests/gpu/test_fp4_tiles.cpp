// The FP4 expert tiles (cuda_ops.h: fp4_tile_cuda): every 32-column piece of codes and its scale
// byte land where the layout says (tiles of 16 rows × 128 columns, 64 code bytes and 4 scale bytes
// a tile row, tiles along the columns, then down the rows, each word's codes in pair order), the padding columns of the last tile
// get zero codes and the scale 1 (byte 127: the decode products read them), and shapes the tiles
// cannot hold are refused with an error.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "core/error.h"
#include "cuda/buffer.h"
#include "ops/cuda_ops.h"

namespace {

using namespace dsv4;

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
  std::vector<bool> code_set(tc.size()), scale_set(ts.size());
  const int64_t tiles_per_row = padded / 128;
  for (int64_t r = 0; r < rows; ++r)
    for (int c = 0; c < cols; c += 32) {
      const int64_t tile = (r / 16) * tiles_per_row + c / 128;
      const int64_t at = tile * 1024 + (r % 16) * 64 + (c % 128) / 2;
      // Column u of each 8 (a 32-bit word) goes to nibble 4 (u % 2) + u / 2 of its word: the even
      // columns in nibbles 0 .. 3, the odd ones in 4 .. 7.
      for (int u = 0; u < 32; ++u) {
        const uint8_t in = codes[r * cols / 2 + (c + u) / 2];
        const int want = (u % 2 ? in >> 4 : in) & 15;
        const int nib = 4 * (u % 2) + (u % 8) / 2, byte = 4 * (u / 8) + nib / 2;
        const int got = (nib % 2 ? tc[at + byte] >> 4 : tc[at + byte]) & 15;
        ASSERT_EQ(got, want) << "row " << r << " column " << c + u;
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
