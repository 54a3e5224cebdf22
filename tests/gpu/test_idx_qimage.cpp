// The indexer's query image (cuda_ops.h: idx_q_image_byte): indexer_query_cuda writes every head's
// bf16 values where the layout says, each byte of the image once; the few-row scores read from the
// image equal, bit for bit, the scores that convert the float32 heads in each block (the digit
// counts too); and images the kernels cannot hold are refused with an error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "cache_rows.h"
#include "core/error.h"
#include "ops/quant.h"
#include "ops/rope.h"

namespace {

using namespace dsv4;
using namespace dsv4::cuda;
using namespace dsv4::testing_gpu;

std::vector<float> rope_freqs(int R) { return ops::rope_frequencies(R, 160000.0f, {16.0f, 32.0f, 1.0f, 65536}); }

TEST(IdxQueryImage, HeadsLandWhereTheLayoutSays) {
  const int rows = 2, heads = 128, d = 128, R = 64;  // two passes of 64 heads a row
  std::mt19937 rng(11);
  const std::vector<float> x = randn(rng, rows * heads * d, 2.0f);
  const std::vector<int32_t> pos = {4095, 1000000};
  auto df = dev(rope_freqs(R));
  auto dp = dev(pos);
  auto a = dev(x), b = dev(x);
  DeviceArray<bf16> image(std::vector<bf16>(rows * heads * d, __float2bfloat16(-7.0f)));
  indexer_query_cuda(a.get(), rows, heads, d, R, df.get(), dp.get(), 0);
  indexer_query_cuda(b.get(), rows, heads, d, R, df.get(), dp.get(), 0, image.get());
  const std::vector<float> q = host(a), qb = host(b);
  ASSERT_EQ(std::memcmp(q.data(), qb.data(), q.size() * sizeof(float)), 0) << "the heads differ with an image";
  const std::vector<bf16> img = host(image);
  std::vector<uint8_t> bytes(img.size() * 2);
  std::memcpy(bytes.data(), img.data(), bytes.size());
  std::vector<int> written(bytes.size() / 2, 0);
  for (int r = 0; r < rows; ++r)
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < d; ++i) {
        const size_t pass = (static_cast<size_t>(r) * heads + h / kIdxQImageHeads * kIdxQImageHeads) * d * 2;
        const size_t at = pass + idx_q_image_byte(h % kIdxQImageHeads, i);
        ASSERT_LT(at + 1, bytes.size());
        ASSERT_EQ(at % 2, 0u);
        uint16_t got;
        std::memcpy(&got, &bytes[at], 2);
        ASSERT_EQ(got, f32_to_bf16(q[(static_cast<size_t>(r) * heads + h) * d + i]))
            << "row " << r << " head " << h << " dim " << i;
        ++written[at / 2];
      }
  for (size_t i = 0; i < written.size(); ++i) ASSERT_EQ(written[i], 1) << "image element " << i;
}

TEST(IdxQueryImage, ScoresFromTheImageEqualTheConvertedOnes) {
  const int DI = 128, R = 64, count_max = 10000;
  const std::vector<int32_t> pos = {999, 4095, 4 * count_max - 1};
  const int rows = static_cast<int>(pos.size());
  std::mt19937 rng(12);
  std::vector<float> k = randn(rng, static_cast<size_t>(count_max) * DI);
  for (int i = 0; i < count_max; ++i) ops::fp4_sim(&k[static_cast<size_t>(i) * DI], DI, 32);
  HostRows entries = make_rows(k, count_max, DI, 0, true, true);
  LayerCache lc;
  lc.idx_entries = entries.view();
  DeviceArray<LayerCache> dlc(std::vector<LayerCache>{lc});
  auto df = dev(rope_freqs(R));
  auto dp = dev(pos);
  auto dslot = dev(std::vector<int32_t>(rows, 0));
  for (int HI : {64, 128}) {
    ASSERT_TRUE(idx_q_image_used(rows, HI, DI, true));
    auto dq = dev(randn(rng, static_cast<size_t>(rows) * HI * DI));
    auto dw = dev(randn(rng, static_cast<size_t>(rows) * HI));
    DeviceArray<bf16> image(static_cast<size_t>(rows) * HI * DI);
    indexer_query_cuda(dq.get(), rows, HI, DI, R, df.get(), dp.get(), 0, image.get());
    const float wscale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(DI) * HI));
    DeviceArray<float> s_conv(static_cast<size_t>(rows) * count_max), s_img(static_cast<size_t>(rows) * count_max);
    DeviceArray<uint32_t> d_conv(std::vector<uint32_t>(rows * kTopkDigits, 0)),
        d_img(std::vector<uint32_t>(rows * kTopkDigits, 0));
    indexer_scores_cuda(dq.get(), dw.get(), wscale, rows, HI, DI, dslot.get(), dp.get(), dlc.get(), true,
                        s_conv.get(), count_max, count_max, 0, d_conv.get());
    indexer_scores_cuda(dq.get(), dw.get(), wscale, rows, HI, DI, dslot.get(), dp.get(), dlc.get(), true,
                        s_img.get(), count_max, count_max, 0, d_img.get(), image.get());
    const std::vector<float> a = host(s_conv), b = host(s_img);
    for (int r = 0; r < rows; ++r)
      for (int i = 0; i < (pos[r] + 1) / 4; ++i) {
        const size_t at = static_cast<size_t>(r) * count_max + i;
        ASSERT_EQ(std::memcmp(&a[at], &b[at], 4), 0) << "HI " << HI << " row " << r << " entry " << i << ": "
                                                      << a[at] << " converted, " << b[at] << " from the image";
      }
    EXPECT_EQ(host(d_conv), host(d_img)) << "HI " << HI << ": the digit counts";
  }
}

TEST(IdxQueryImage, RefusesImagesTheKernelsCannotHold) {
  DeviceArray<float> x(std::vector<float>(3 * 100 * 128, 0.0f));
  DeviceArray<bf16> image(3 * 100 * 128);
  auto df = dev(rope_freqs(64));
  auto dp = dev(std::vector<int32_t>{5, 6, 7});
  EXPECT_THROW(indexer_query_cuda(x.get(), 3, 64, 64, 32, df.get(), dp.get(), 0, image.get()), Error);   // d = 64
  EXPECT_THROW(indexer_query_cuda(x.get(), 3, 100, 128, 64, df.get(), dp.get(), 0, image.get()), Error);  // heads
  EXPECT_FALSE(idx_q_image_used(3, 100, 128, true));
  EXPECT_FALSE(idx_q_image_used(3, 64, 128, false));  // float32 entries: the mma.sync kernel
  EXPECT_FALSE(idx_q_image_used(65, 64, 128, true));  // many rows: the prefill kernel
  DeviceArray<float> w(std::vector<float>(3 * 100, 0.0f)), score(3 * 16);
  auto dslot = dev(std::vector<int32_t>(3, 0));
  DeviceArray<LayerCache> dlc(std::vector<LayerCache>{LayerCache{}});
  EXPECT_THROW(indexer_scores_cuda(x.get(), w.get(), 1.0f, 3, 100, 128, dslot.get(), dp.get(), dlc.get(), true,
                                   score.get(), 16, 16, 0, nullptr, image.get()),
               Error);
}

}  // namespace
