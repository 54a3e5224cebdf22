// What the two CUDA attention files share (contract of the op in cuda_ops.h): attention.cu has
// the float32 kernel, the combine of split partials and the entry points; attention_mma.cu the
// fast precision's tensor-core kernel.
#pragma once
#include <cstdint>

#include "ops/cuda_ops.h"

namespace dsv4::cuda::attn {

constexpr int kMaxSplits = 128;  // the most partials one (row, head) is split into

// part [rows, H, splits, pstride floats] (per split: unnormalized o, then m, l, pad) merged with
// the sink into o [rows, H, Dh], then the output step `out` (R: the RoPE dims of a head). o of a
// partial is Dh floats (pstride = Dh + 4), or with bf16_part Dh bf16 values (pstride = Dh / 2 + 4:
// half the bytes to write and read back, for the tensor-core kernel's long rows).
void launch_combine(const float* part, const float* sink, int64_t rows, int H, int Dh, int R, int splits,
                    const int32_t* pos, const AttnOutput& out, float* o, cudaStream_t s, bool bf16_part = false);
// The floats of one partial's o in either form (m and l follow it), and of the whole partial (o,
// m, l, pad).
__host__ __device__ inline int partial_o_floats(int Dh, bool bf16_part) { return bf16_part ? Dh / 2 : Dh; }
__host__ __device__ inline int partial_stride(int Dh, bool bf16_part) { return partial_o_floats(Dh, bf16_part) + 4; }
// The output step `out` alone, on o as the attention kernel wrote it (no combine).
void output_step(int64_t rows, int H, int Dh, int R, const int32_t* pos, const AttnOutput& out, float* o,
                 cudaStream_t s);

// The tensor-core kernel: whether it takes this shape, its work buffer in floats (the split
// partials and the chunk's rows in compact form), and the attention itself.
bool mma_fits(const AttnShape& a);
int64_t mma_work(int64_t rows, const AttnShape& a);
// Where the chunk's rows sit in compact form in the work buffer (after the split partials).
CacheRows chunk_rows(float* work, int64_t rows, const AttnShape& a);
// With out.one_row_each the kernel that encodes the chunk's rows also writes them to the window ring.
void mma_attention(const float* q, const float* kv, const float* sink, const AttnShape& a, const int32_t* slot,
                   const int32_t* pos, int64_t rows, const SeqRows* seqs, const LayerCache* caches,
                   const int32_t* selected, float* o, float* work, cudaStream_t s, const AttnOutput& out);

}  // namespace dsv4::cuda::attn
