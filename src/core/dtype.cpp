#include "core/dtype.h"

#include <cmath>
#include <unordered_map>

namespace dsv4 {

namespace {
struct DTypeInfo { const char* name; int size; };
const DTypeInfo kInfo[] = {
    {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F8_E4M3", 1}, {"F8_E8M0", 1}, {"I8", 1},
    {"U8", 1},  {"I16", 2}, {"I32", 4},  {"I64", 8},     {"F64", 8},     {"BOOL", 1},
};

// Nearest value of a binary minifloat with `mbits` mantissa bits whose smallest
// normal exponent is `emin` (subnormal step 2^(emin − mbits)); ties to even.
float round_minifloat(float v, int mbits, int emin) {
  if (v == 0.0f || !std::isfinite(v)) return v;
  int e;
  std::frexp(v, &e);  // |v| = f · 2^e, f in [0.5, 1) → floor(log2|v|) = e − 1
  int exponent = std::max(e - 1, emin);
  float step = std::ldexp(1.0f, exponent - mbits);
  return std::nearbyint(v / step) * step;  // default rounding mode: ties to even
}
}  // namespace

bool parse_dtype(const std::string& name, DType* out) {
  for (int i = 0; i < static_cast<int>(std::size(kInfo)); ++i) {
    if (name == kInfo[i].name) { *out = static_cast<DType>(i); return true; }
  }
  return false;
}
const char* dtype_name(DType t) { return kInfo[static_cast<int>(t)].name; }
int dtype_size(DType t) { return kInfo[static_cast<int>(t)].size; }

uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  float v;
  if (exp == 0) v = std::ldexp(static_cast<float>(man), -24);
  else if (exp == 31) v = man ? NAN : INFINITY;
  else v = std::ldexp(static_cast<float>(man | 0x400), static_cast<int>(exp) - 25);
  return sign ? -v : v;
}

uint16_t f32_to_f16(float f) {
  uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  float a = std::fabs(f);
  if (std::isnan(f)) return 0x7e00;
  if (a >= 65520.0f) return sign | 0x7c00;
  float r = round_minifloat(a, 10, -14);
  if (r >= 65536.0f) return sign | 0x7c00;
  if (r < std::ldexp(1.0f, -14)) return sign | static_cast<uint16_t>(r * 16777216.0f);
  int e;
  float m = std::frexp(r, &e);  // r = m · 2^e
  uint16_t exp = static_cast<uint16_t>(e - 1 + 15);
  uint16_t man = static_cast<uint16_t>((m * 2.0f - 1.0f) * 1024.0f);
  return sign | static_cast<uint16_t>(exp << 10) | man;
}

float e4m3_to_f32(uint8_t b) {
  uint32_t sign = b >> 7, exp = (b >> 3) & 0xf, man = b & 7;
  if (exp == 15 && man == 7) return NAN;
  float v = exp == 0 ? std::ldexp(static_cast<float>(man), -9)
                     : std::ldexp(static_cast<float>(man | 8), static_cast<int>(exp) - 10);
  return sign ? -v : v;
}

float round_e4m3(float v) { return round_minifloat(v, 3, -6); }
float round_e2m1(float v) { return round_minifloat(v, 1, 0); }

uint8_t f32_to_e4m3(float f) {
  if (std::isnan(f)) return 0x7f;
  uint8_t sign = std::signbit(f) ? 0x80 : 0;
  float a = std::min(std::fabs(f), 448.0f);
  float r = round_e4m3(a);
  if (r == 0.0f) return sign;
  if (r < std::ldexp(1.0f, -6)) return sign | static_cast<uint8_t>(r * 512.0f);
  int e;
  float m = std::frexp(r, &e);
  uint8_t exp = static_cast<uint8_t>(e - 1 + 7);
  uint8_t man = static_cast<uint8_t>((m * 2.0f - 1.0f) * 8.0f);
  return sign | static_cast<uint8_t>(exp << 3) | man;
}

float e8m0_to_f32(uint8_t b) { return b == 255 ? NAN : std::ldexp(1.0f, static_cast<int>(b) - 127); }

float e2m1_to_f32(uint8_t nibble) {
  static const float kMag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  float v = kMag[nibble & 7];
  return (nibble & 8) ? -v : v;
}

uint8_t f32_to_e2m1(float f) {
  uint8_t sign = std::signbit(f) ? 8 : 0;
  float r = round_e2m1(std::min(std::fabs(f), 6.0f));
  static const float kMag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  for (uint8_t i = 0; i < 8; ++i)
    if (kMag[i] == r) return sign | i;
  return sign | 7;
}

float pow2_ceil(float x) {
  uint32_t u = f32_bits(x);
  int exponent = static_cast<int>((u >> 23) & 0xff) - 127;
  if (u & 0x7fffffu) exponent += 1;
  return std::ldexp(1.0f, exponent);
}

}  // namespace dsv4
