// Number formats: decoding tables and rounding at ties, saturation, subnormals.
#include <gtest/gtest.h>

#include <cmath>

#include "core/dtype.h"

using namespace dsv4;

TEST(DType, E8M0DecodesPowersOfTwo) {
  EXPECT_EQ(e8m0_to_f32(127), 1.0f);
  EXPECT_EQ(e8m0_to_f32(128), 2.0f);
  EXPECT_EQ(e8m0_to_f32(120), 1.0f / 128.0f);
  EXPECT_EQ(e8m0_to_f32(0), std::ldexp(1.0f, -127));
  EXPECT_TRUE(std::isnan(e8m0_to_f32(255)));
}

TEST(DType, E4M3DecodeCoversTheFnVariant) {
  EXPECT_EQ(e4m3_to_f32(0x00), 0.0f);
  EXPECT_EQ(e4m3_to_f32(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(e4m3_to_f32(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(e4m3_to_f32(0x38), 1.0f);                  // exponent 7 = bias
  EXPECT_EQ(e4m3_to_f32(0x7e), 448.0f);                // max, no infinities
  EXPECT_EQ(e4m3_to_f32(0xfe), -448.0f);
  EXPECT_TRUE(std::isnan(e4m3_to_f32(0x7f)));
  EXPECT_TRUE(std::isnan(e4m3_to_f32(0xff)));
}

TEST(DType, E4M3EncodeRoundTripsEveryFiniteCode) {
  for (int b = 0; b < 256; ++b) {
    float v = e4m3_to_f32(static_cast<uint8_t>(b));
    if (std::isnan(v)) continue;
    if (v == 0.0f) continue;  // ±0 both decode to zero
    EXPECT_EQ(f32_to_e4m3(v), b) << "code " << b;
  }
}

TEST(DType, E4M3RoundsToNearestEven) {
  // Between 1 and 1.125 (step 1/8): the midpoint goes to the even mantissa (1.0).
  EXPECT_EQ(round_e4m3(1.0625f), 1.0f);
  EXPECT_EQ(round_e4m3(1.1875f), 1.25f);  // midpoint of 1.125 and 1.25 → even 1.25
  EXPECT_EQ(round_e4m3(1.07f), 1.125f);
  // Subnormals are steps of 2^-9; |v| <= 2^-10 becomes zero (tie to even 0).
  EXPECT_EQ(round_e4m3(std::ldexp(1.0f, -10)), 0.0f);
  EXPECT_EQ(round_e4m3(std::ldexp(1.5f, -10)), std::ldexp(1.0f, -9));
  EXPECT_EQ(round_e4m3(std::ldexp(3.0f, -10)), std::ldexp(2.0f, -9));  // 1.5 steps → even 2
  EXPECT_EQ(round_e4m3(-std::ldexp(5.0f, -10)), -std::ldexp(2.0f, -9));  // 2.5 steps → 2
  // Saturation is the caller's clamp; the encoder saturates too.
  EXPECT_EQ(round_e4m3(440.0f), 448.0f);
  EXPECT_EQ(f32_to_e4m3(1000.0f), 0x7e);
}

TEST(DType, E2M1RoundsOnTheFp4Grid) {
  const float in[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 0.3f, 5.1f, 6.0f};
  const float out[] = {0.0f, 1.0f, 1.0f, 2.0f, 2.0f, 4.0f, 4.0f, 0.5f, 6.0f, 6.0f};
  for (size_t i = 0; i < std::size(in); ++i) {
    EXPECT_EQ(round_e2m1(in[i]), out[i]) << in[i];
    EXPECT_EQ(round_e2m1(-in[i]), -out[i]) << -in[i];
  }
  for (uint8_t n = 0; n < 16; ++n) {
    if (n == 8) continue;  // −0
    EXPECT_EQ(f32_to_e2m1(e2m1_to_f32(n)), n);
  }
}

TEST(DType, Bf16AndF16RoundTrip) {
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f)), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.00390625f)), 1.0f);  // tie → even
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.01171875f)), 1.015625f);  // tie → even (up)
  EXPECT_EQ(f16_to_f32(f32_to_f16(0.333251953125f)), 0.333251953125f);
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
}

TEST(DType, Pow2CeilUsesTheMantissaBits) {
  EXPECT_EQ(pow2_ceil(1.0f), 1.0f);
  EXPECT_EQ(pow2_ceil(1.0000001f), 2.0f);
  EXPECT_EQ(pow2_ceil(0.75f), 1.0f);
  EXPECT_EQ(pow2_ceil(0.5f), 0.5f);
}
