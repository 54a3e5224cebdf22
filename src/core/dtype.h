// Number formats of DeepSeek-V4 checkpoints and of its quantization simulation:
// bf16, f16, e4m3 ("fn": bias 7, max 448, no inf, NaN = 0x7F/0xFF), e8m0 (2^(b-127)),
// e2m1 (sign + index into {0, 0.5, 1, 1.5, 2, 3, 4, 6}).
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace dsv4 {

enum class DType { F32, F16, BF16, F8_E4M3, F8_E8M0, I8, U8, I16, I32, I64, F64, BOOL };

// Parses a safetensors dtype name; returns false for an unknown one.
bool parse_dtype(const std::string& name, DType* out);
const char* dtype_name(DType t);
int dtype_size(DType t);

inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float f32_from_bits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

inline float bf16_to_f32(uint16_t h) { return f32_from_bits(static_cast<uint32_t>(h) << 16); }
// Round to nearest even (NaN stays NaN).
uint16_t f32_to_bf16(float f);
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

float e4m3_to_f32(uint8_t b);
// Encodes a value already rounded or not; rounds to nearest even, saturates at ±448.
uint8_t f32_to_e4m3(float f);
// e8m0: 2^(b − 127); 255 is NaN.
float e8m0_to_f32(uint8_t b);
float e2m1_to_f32(uint8_t nibble);
uint8_t f32_to_e2m1(float f);

// Round to the nearest e4m3 / e2m1 value, ties to even, subnormals included.
// The input must already lie within the format's range (callers clamp).
float round_e4m3(float v);
float round_e2m1(float v);

// 2^ceil(log2(x)) for x > 0, from the float32 bits: exponent − 127, +1 if any
// mantissa bit is set (the quantization simulation's scale rule, model.md §8).
float pow2_ceil(float x);

}  // namespace dsv4
