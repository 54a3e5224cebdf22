// The CUDA model against the CPU oracle and the golden fixtures:
//   - float32 precision passes the fixture tolerance rule (fixtures/README.md) on both fixtures,
//     logits and MTP logits, and matches the CPU backend on random tiny models of many shapes;
//   - the fast precision (bf16 / FP8 / FP4, compact caches) keeps argmax agreement >= 95%
//     with the float32 logits, and reports its mean |Δ|;
//   - decode equals prefill on the GPU (chunked prefill, decode steps, batches of different lengths).
#include <gtest/gtest.h>

#include <cstdio>

#include "../model_test_util.h"
#include "infer/generate.h"
#include "infer/parity.h"
#include "io/tokenizer.h"
#include "model/backend.h"
#include "cuda/launch.h"
#include "model/cuda_model_impl.cuh"
#include "model/model.h"

using namespace dsv4;
using namespace dsv4::testing_util;

namespace {

const std::string kFixtures = DSV4_FIXTURES;

// Feeds ids in chunks of the given sizes (the last size repeats); all logits [T, V].
Tensor run_chunks(Backend& b, const std::vector<int64_t>& ids, std::vector<int64_t> sizes) {
  const int64_t V = b.config().vocab_size, T = static_cast<int64_t>(ids.size());
  const int seq = b.new_sequence(T);
  Tensor out({T, V});
  int64_t p = 0;
  size_t k = 0;
  while (p < T) {
    const int64_t n = std::min(sizes[std::min(k++, sizes.size() - 1)], T - p);
    ForwardOut o = b.forward({{seq, std::vector<int64_t>(ids.begin() + p, ids.begin() + p + n)}});
    std::copy(o.logits.data.begin(), o.logits.data.end(), out.ptr() + p * V);
    p += n;
  }
  b.free_sequence(seq);
  return out;
}

// The fixture rule (float32), or the fast path's rule: the fast path's products change with the
// row count (cuBLASLt algorithms, the MoE's gemv vs grouped kernels), so prefill and decode agree
// to its precision, not to float32's.
void expect_close(const Tensor& got, const Tensor& want, int64_t V, const std::string& what, bool fast = false) {
  LogitStats s = compare_logits(got.ptr(), want.ptr(), got.numel() / V, V);
  std::printf("  %-44s mean|d| %.3g max|d| %.3g argmax %.2f%%\n", what.c_str(), s.mean_abs, s.max_abs,
              100 * s.argmax_agree);
  EXPECT_TRUE(fast ? s.passes_fast() : s.passes())
      << what << ": mean " << s.mean_abs << " max " << s.max_abs << " argmax " << s.argmax_agree;
}

}  // namespace

class FixtureOnGpu : public ::testing::TestWithParam<std::string> {};

TEST_P(FixtureOnGpu, Float32PassesTheFixtureRule) {
  const std::string dir = kFixtures + "/" + GetParam();
  Model m = Model::load(dir);
  auto b = make_backend(Device::Cuda, m, Precision::F32);
  for (const ParityCase& pc : run_parity(dir, false, *b)) {
    std::printf("  %-6s logits mean|d| %.3g max|d| %.3g argmax %.2f%% | mtp mean|d| %.3g max|d| %.3g argmax %.2f%%\n",
                pc.name.c_str(), pc.logits.mean_abs, pc.logits.max_abs, 100 * pc.logits.argmax_agree,
                pc.mtp.mean_abs, pc.mtp.max_abs, 100 * pc.mtp.argmax_agree);
    EXPECT_TRUE(pc.passes()) << GetParam() << " case " << pc.name;
  }
}

TEST_P(FixtureOnGpu, FastPathKeepsTheArgmax) {
  const std::string dir = kFixtures + "/" + GetParam();
  Model m = Model::load(dir);
  auto b = make_backend(Device::Cuda, m, Precision::Fast, dir);
  std::printf("  backend: %s\n", b->describe().c_str());
  const std::vector<ParityCase> cases = run_parity(dir, false, *b, true);
  for (const ParityCase& pc : cases)
    std::printf("  %-6s fast: logits mean|d| %.3g max|d| %.3g argmax %.2f%% | mtp mean|d| %.3g argmax %.2f%%\n",
                pc.name.c_str(), pc.logits.mean_abs, pc.logits.max_abs, 100 * pc.logits.argmax_agree, pc.mtp.mean_abs,
                100 * pc.mtp.argmax_agree);
  double la = 0, ma = 0;
  EXPECT_TRUE(fast_verdict(cases, &la, &ma)) << GetParam() << ": argmax over all rows " << la << " (mtp " << ma << ")";
  std::printf("  over all rows: logits argmax %.2f%%, mtp argmax %.2f%%\n", 100 * la, 100 * ma);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, FixtureOnGpu, ::testing::Values("tiny-fp32", "tiny-fp8"),
                         [](const auto& info) { return info.param == "tiny-fp32" ? std::string("fp32") : std::string("fp8"); });

struct Shape_ {
  const char* name;
  TinyOptions o;
};
class TinyShapes : public ::testing::TestWithParam<Shape_> {};

// Prefill 23 then decode, and the MTP block on the prefill's streams: GPU float32 = CPU.
TEST_P(TinyShapes, GpuMatchesCpu) {
  ModelConfig c = tiny_config(GetParam().o);
  Model m(c, random_params(c, 7));
  auto cpu = make_backend(Device::Cpu, m, Precision::F32);
  auto gpu = make_backend(Device::Cuda, m, Precision::F32);
  std::vector<int64_t> ids = random_ids(c, 70, 11);
  const int64_t V = c.vocab_size;
  expect_close(run_chunks(*gpu, ids, {23, 1}), run_chunks(*cpu, ids, {23, 1}), V, "prefill 23 + decode, gpu vs cpu");
  // MTP on the prefill's streams
  auto mtp_logits = [&](Backend& b) {
    const int s = b.new_sequence(40), t = b.new_sequence(40);
    ForwardOut pre = b.forward({{s, std::vector<int64_t>(ids.begin(), ids.begin() + 40)}}, true);
    ForwardOut mo = b.mtp_forward({{t, std::vector<int64_t>(ids.begin() + 1, ids.begin() + 41)}}, pre.streams);
    b.free_sequence(s);
    b.free_sequence(t);
    return mo.logits;
  };
  expect_close(mtp_logits(*gpu), mtp_logits(*cpu), V, "mtp, gpu vs cpu");
}

TEST_P(TinyShapes, DecodeEqualsPrefillOnGpu) {
  ModelConfig c = tiny_config(GetParam().o);
  Model m(c, random_params(c, 7));
  std::vector<int64_t> ids = random_ids(c, 70, 11);
  for (Precision p : {Precision::F32, Precision::Fast}) {
    auto gpu = make_backend(Device::Cuda, m, p);
    Tensor full = run_chunks(*gpu, ids, {70});
    const bool fast = p == Precision::Fast;
    const std::string tag = fast ? " (fast)" : " (f32)";
    expect_close(run_chunks(*gpu, ids, {23, 1}), full, c.vocab_size, "prefill 23 + decode" + tag, fast);
    expect_close(run_chunks(*gpu, ids, {5, 13, 7, 2}), full, c.vocab_size, "uneven chunks" + tag, fast);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, TinyShapes,
    ::testing::Values(Shape_{"flash_like", {}},
                      Shape_{"hc1_softmax", {1, ScoringFunc::Softmax, {4, 0, 8}, 1, true, 8, 4}},
                      Shape_{"hc3_sigmoid_noyarn", {3, ScoringFunc::Sigmoid, {8, 4, 4}, 2, false, 6, 3}},
                      Shape_{"csa_first_window_large", {2, ScoringFunc::SqrtSoftplus, {4, 16}, 0, true, 32, 8}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(CudaModel, BatchOfDifferentLengthsEqualsSeparateRuns) {
  Model m = Model::load(kFixtures + "/tiny-fp32");
  const ModelConfig& c = m.config();
  const int64_t V = c.vocab_size;
  auto gpu = make_backend(Device::Cuda, m, Precision::F32);
  std::vector<std::vector<int64_t>> seqs = {random_ids(c, 1, 1), random_ids(c, 33, 2), random_ids(c, 17, 3)};
  std::vector<std::vector<int64_t>> more = {random_ids(c, 6, 4), random_ids(c, 6, 5), random_ids(c, 6, 6)};
  std::vector<int> h;
  std::vector<SeqChunk> pre;
  for (size_t b = 0; b < seqs.size(); ++b) {
    h.push_back(gpu->new_sequence(64));
    pre.push_back({h[b], seqs[b]});
  }
  ForwardOut po = gpu->forward(pre);
  std::vector<Tensor> dec;
  for (int step = 0; step < 6; ++step) {
    std::vector<SeqChunk> batch;
    for (size_t b = 0; b < seqs.size(); ++b) batch.push_back({h[b], {more[b][step]}});
    dec.push_back(gpu->forward(batch).logits);
  }
  int64_t row0 = 0;
  for (size_t b = 0; b < seqs.size(); ++b) {
    std::vector<int64_t> all = seqs[b];
    all.insert(all.end(), more[b].begin(), more[b].end());
    Tensor alone = run_chunks(*gpu, all, {static_cast<int64_t>(all.size())});
    const int64_t P = static_cast<int64_t>(seqs[b].size());
    Tensor got({static_cast<int64_t>(all.size()), V});
    std::copy(po.logits.ptr() + row0 * V, po.logits.ptr() + (row0 + P) * V, got.ptr());
    for (int step = 0; step < 6; ++step)
      std::copy(dec[step].ptr() + b * V, dec[step].ptr() + (b + 1) * V, got.ptr() + (P + step) * V);
    expect_close(got, alone, V, "batched vs alone, sequence " + std::to_string(b));
    row0 += P;
  }
}

TEST(CudaModel, SequenceCapacityIsChecked) {
  Model m = Model::load(kFixtures + "/tiny-fp32");
  auto gpu = make_backend(Device::Cuda, m, Precision::F32);
  const int s = gpu->new_sequence(4);
  EXPECT_THROW(gpu->forward({{s, {1, 2, 3, 4, 5}}}), Error);
}

// A decode step replayed from a captured CUDA graph computes exactly what the eager step computes,
// with or without programmatic dependent launch.
TEST(CudaModel, GraphDecodeEqualsEagerDecode) {
  ModelConfig c = tiny_config();
  Model m(c, random_params(c, 7));
  cuda::CudaModel gpu(c, &m.params(), nullptr, Precision::Fast);
  const std::vector<int64_t> ids = random_ids(c, 40, 3);
  const int64_t V = c.vocab_size;
  auto run = [&](bool graph) {
    const int s = gpu.new_sequence(64);
    gpu.forward_on_device({{s, std::vector<int64_t>(ids.begin(), ids.begin() + 20)}});
    std::vector<float> all;
    for (int t = 20; t < 40; ++t) {
      if (graph) gpu.decode_step_graph({{s, {ids[t]}}});
      else gpu.forward_on_device({{s, {ids[t]}}});
      std::vector<float> l(V);
      DSV4_CUDA_CHECK(cudaStreamSynchronize(gpu.stream()));
      DSV4_CUDA_CHECK(cudaMemcpy(l.data(), gpu.logits_device(), V * sizeof(float), cudaMemcpyDeviceToHost));
      all.insert(all.end(), l.begin(), l.end());
    }
    gpu.free_sequence(s);
    return all;
  };
  const std::vector<float> eager = run(false), graph = run(true);
  EXPECT_EQ(eager, graph);
  // Programmatic dependent launch (cuda/launch.h) changes when kernels start, never what they
  // compute: a missing wait would let a kernel read its input before it is written.
  ASSERT_TRUE(cuda::pdl_enabled());
  cuda::set_pdl(false);
  const std::vector<float> eager_serial = run(false), graph_serial = run(true);
  cuda::set_pdl(true);
  EXPECT_EQ(eager, eager_serial);
  EXPECT_EQ(graph, graph_serial);
}

// forward() replays decode steps from a captured graph (the path dsv4 generate takes): the same
// logits and streams as eager steps, bit for bit, through a prefill, decode steps, a chunk that
// moves the scratch buffers (the graph is captured again), and a batch that changes.
TEST(CudaModel, ForwardReplaysDecodeStepsFromGraphs) {
  ModelConfig c = tiny_config();
  Model m(c, random_params(c, 7));
  const std::vector<int64_t> ids = random_ids(c, 64, 5);
  auto run = [&](bool graphs, int64_t* replays) {
    cuda::CudaModel gpu(c, &m.params(), nullptr, Precision::Fast);
    gpu.set_graphs(graphs);
    std::vector<float> all;
    auto keep = [&](const ForwardOut& o) {
      all.insert(all.end(), o.logits.data.begin(), o.logits.data.end());
      all.insert(all.end(), o.streams.data.begin(), o.streams.data.end());
    };
    const int s = gpu.new_sequence(64);
    size_t p = 0;
    auto next = [&](size_t n) {
      std::vector<int64_t> part(ids.begin() + p, ids.begin() + p + n);
      p += n;
      return part;
    };
    keep(gpu.forward({{s, next(12)}}, false, nullptr));
    for (int t = 0; t < 6; ++t) keep(gpu.forward({{s, next(1)}}, t == 5, nullptr));
    keep(gpu.forward({{s, next(24)}}, false, nullptr));  // more rows: the scratch buffers grow
    for (int t = 0; t < 6; ++t) keep(gpu.forward({{s, next(1)}}, false, nullptr));
    const int u = gpu.new_sequence(64);
    keep(gpu.forward({{u, std::vector<int64_t>(ids.begin(), ids.begin() + 5)}}, false, nullptr));
    for (int t = 0; t < 6; ++t) keep(gpu.forward({{s, next(1)}, {u, {ids[5 + t]}}}, false, nullptr));
    gpu.free_sequence(u);
    gpu.free_sequence(s);
    *replays = gpu.graph_replays();
    return all;
  };
  int64_t eager_replays = -1, graph_replays = -1;
  const std::vector<float> eager = run(false, &eager_replays), graph = run(true, &graph_replays);
  EXPECT_EQ(eager, graph);
  EXPECT_EQ(eager_replays, 0);
  // Each run of decode steps: one eager, one eager and captured, the rest replayed (4 + 5 + 4).
  EXPECT_EQ(graph_replays, 13);
}

// forward_last (what generation reads): the LM head on each chunk's last row alone gives that
// row of forward()'s logits, for chunks of different lengths and then a decode step.
TEST(CudaModel, ForwardLastIsEachChunksLastRow) {
  ModelConfig c = tiny_config();
  Model m(c, random_params(c, 7));
  const int64_t V = c.vocab_size;
  const std::vector<int64_t> ids = random_ids(c, 40, 9);
  for (Precision p : {Precision::F32, Precision::Fast}) {
    auto a = make_backend(Device::Cuda, m, p), b = make_backend(Device::Cuda, m, p);
    const int a0 = a->new_sequence(64), a1 = a->new_sequence(64), b0 = b->new_sequence(64), b1 = b->new_sequence(64);
    const std::vector<int64_t> s0(ids.begin(), ids.begin() + 23), s1(ids.begin() + 23, ids.begin() + 30);
    const ForwardOut all = a->forward({{a0, s0}, {a1, s1}}), last = b->forward_last({{b0, s0}, {b1, s1}});
    ASSERT_EQ(last.logits.shape, (std::vector<int64_t>{2, V}));
    Tensor want({2, V});
    std::copy(all.logits.ptr() + 22 * V, all.logits.ptr() + 23 * V, want.ptr());
    std::copy(all.logits.ptr() + 29 * V, all.logits.ptr() + 30 * V, want.ptr() + V);
    const bool fast = p == Precision::Fast;
    expect_close(last.logits, want, V, std::string("forward_last, prefill") + (fast ? " (fast)" : " (f32)"), fast);
    const ForwardOut step_all = a->forward({{a0, {ids[30]}}, {a1, {ids[31]}}});
    const ForwardOut step_last = b->forward_last({{b0, {ids[30]}}, {b1, {ids[31]}}});
    EXPECT_EQ(step_last.logits.data, step_all.logits.data);  // a decode step: the same path
  }
}

// dsv4 generate on the GPU: greedy generation through the CUDA backend (float32) gives the CPU's
// tokens on the fixture model (its logits agree to ~1e-6 there), and the fast path runs and
// reports its backend.
TEST(CudaGenerate, GreedyFloat32EqualsCpu) {
  Model m = Model::load(kFixtures + "/tiny-fp32");
  const Tokenizer tok = Tokenizer::from_file(std::string(DSV4_SOURCE_DIR) + "/data/tokenizers/byte/tokenizer.json");
  GenerateOptions o;
  o.sampling.temperature = 0.0f;
  o.max_tokens = 24;
  const std::vector<int32_t> prompt = {0, 72, 101, 108, 108, 111, 32, 119};
  Generator cpu(m, tok, o);
  o.device = Device::Cuda;
  Generator gpu(m, tok, o);
  EXPECT_NE(gpu.describe().find("cuda"), std::string::npos) << gpu.describe();
  const GenerateResult a = cpu.generate(prompt), b = gpu.generate(prompt);
  EXPECT_EQ(a.ids, b.ids);
  // A second turn that extends the first reuses the GPU sequence, as on the CPU.
  std::vector<int32_t> longer = prompt;
  longer.insert(longer.end(), a.ids.begin(), a.ids.begin() + 4);
  const GenerateResult a2 = cpu.generate(longer), b2 = gpu.generate(longer);
  EXPECT_EQ(a2.prefilled_tokens, b2.prefilled_tokens);
  EXPECT_EQ(a2.ids, b2.ids);
  o.precision = Precision::Fast;
  Generator fast(m, tok, o);
  const size_t n = fast.generate(prompt).ids.size();
  EXPECT_TRUE(n >= 1 && n <= static_cast<size_t>(o.max_tokens)) << n;
}
