#include "cuda/blas.h"

namespace dsv4::cuda {

const char* gemm_kind_name(GemmKind k) {
  switch (k) {
    case GemmKind::F32: return "f32";
    case GemmKind::BF16: return "bf16";
    case GemmKind::FP8Block: return "fp8-block";
  }
  return "?";
}

// Column-major view of the row-major problem: D (N×M, ld ldy) = op_T(A = W: K×N, ld ldw) · (B = x: K×M, ld ldx).
struct Blas::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool found = false;
  ~Plan() {
    if (desc) cublasLtMatmulDescDestroy(desc);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
  }
};

Blas::Blas(size_t workspace_bytes) : workspace_(workspace_bytes) {
  DSV4_CUDA_CHECK(cublasLtCreate(&handle_));
}
Blas::~Blas() {
  plans_.clear();
  if (handle_) cublasLtDestroy(handle_);
}

Blas::Plan& Blas::plan(const GemmArgs& g) {
  Key key{static_cast<int>(g.kind), g.M, g.N, g.K, g.ldx, g.ldw, g.ldy, g.beta != 0.0f};
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  auto p = std::make_unique<Plan>();
  cudaDataType_t in = g.kind == GemmKind::F32 ? CUDA_R_32F : g.kind == GemmKind::BF16 ? CUDA_R_16BF : CUDA_R_8F_E4M3;
  DSV4_CUDA_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  DSV4_CUDA_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  DSV4_CUDA_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  if (g.kind == GemmKind::FP8Block) {
    int32_t a_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    DSV4_CUDA_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &a_mode, sizeof a_mode));
    DSV4_CUDA_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &b_mode, sizeof b_mode));
    // Placeholders for the heuristic; the real pointers are set per call.
    const void* dummy = workspace_.get();
    DSV4_CUDA_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &dummy, sizeof dummy));
    DSV4_CUDA_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &dummy, sizeof dummy));
  }
  DSV4_CUDA_CHECK(cublasLtMatrixLayoutCreate(&p->a, in, g.K, g.N, g.ldw));
  DSV4_CUDA_CHECK(cublasLtMatrixLayoutCreate(&p->b, in, g.K, g.M, g.ldx));
  DSV4_CUDA_CHECK(cublasLtMatrixLayoutCreate(&p->c, CUDA_R_32F, g.N, g.M, g.ldy));
  cublasLtMatmulPreference_t pref = nullptr;
  DSV4_CUDA_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  size_t ws = workspace_.bytes();
  DSV4_CUDA_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(handle_, p->desc, p->a, p->b, p->c, p->c, pref, 1, &result, &returned);
  cublasLtMatmulPreferenceDestroy(pref);
  p->found = st == CUBLAS_STATUS_SUCCESS && returned > 0;
  if (p->found) p->algo = result.algo;
  return *plans_.emplace(key, std::move(p)).first->second;
}

void Blas::gemm(const GemmArgs& g, cudaStream_t stream) {
  if (g.M == 0 || g.N == 0) return;
  Plan& p = plan(g);
  DSV4_CHECK(p.found, "cublas",
             str("no cuBLASLt algorithm for a ", gemm_kind_name(g.kind), " GEMM M=", g.M, " N=", g.N, " K=", g.K,
                 " (ldx ", g.ldx, ", ldw ", g.ldw, ", ldy ", g.ldy, ")"));
  if (g.kind == GemmKind::FP8Block) {
    DSV4_CHECK(g.w_scale && g.x_scale, "cublas", "an FP8 GEMM needs both block scales");
    DSV4_CUDA_CHECK(
        cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &g.w_scale, sizeof g.w_scale));
    DSV4_CUDA_CHECK(
        cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &g.x_scale, sizeof g.x_scale));
  }
  const float alpha = 1.0f;
  DSV4_CUDA_CHECK(cublasLtMatmul(handle_, p.desc, &alpha, g.w, p.a, g.x, p.b, &g.beta, g.y, p.c, g.y, p.c, &p.algo,
                                 workspace_.get(), workspace_.bytes(), stream));
}

int Blas::fp8_row_align() {
  if (fp8_align_ < 0) {
    fp8_align_ = 0;
    auto found = [&](int64_t M) {
      GemmArgs g;
      g.kind = GemmKind::FP8Block;
      g.M = M, g.N = 256, g.K = 512, g.ldx = 512, g.ldw = 512, g.ldy = 256;
      return plan(g).found;
    };
    for (int a : {1, 4, 8, 16, 32, 64, 128})
      if (found(a) && found(3 * a)) {
        fp8_align_ = a;
        break;
      }
  }
  return fp8_align_;
}

}  // namespace dsv4::cuda
