// Decode steps replayed from a captured CUDA graph (CudaModel::decode_step_graph; forward() takes
// this path for decode steps in the fast precision): one launch for a whole step.
#include "cuda/launch.h"
#include "model/cuda_model_impl.cuh"

namespace dsv4::cuda {

bool CudaModel::graph_valid(const std::vector<int>& handles) const {
  return graph_ && handles == graph_seqs_ && graph_pdl_ == pdl_enabled() && graph_side_ == side_streams_ &&
         graph_gen_ == scratch_->generation();
}

void CudaModel::decode_step_graph(const std::vector<SeqChunk>& batch) {
  DSV4_CHECK(prec_ == Precision::Fast, "cuda", "graph decode steps need the fast precision (float32 MoE syncs)");
  std::vector<int> handles;
  for (const SeqChunk& ch : batch) {
    DSV4_CHECK(ch.ids.size() == 1, "cuda", "a graph decode step takes one token per sequence");
    handles.push_back(ch.seq);
  }
  prepare(batch, false, true);
  if (graph_valid(handles)) {
    DSV4_CUDA_CHECK(cudaGraphLaunch(graph_, stream_));
    ++graph_replays_;
  } else {
    // This step runs eagerly and sizes every scratch buffer; then the same launches are captured
    // (capturing runs nothing) for the next steps, which only upload new descriptors.
    if (graph_) cudaGraphExecDestroy(graph_);
    graph_ = nullptr;
    float* X = run_main(nullptr);
    head(X, w_.hc_head, w_.norm);
    DSV4_CUDA_CHECK(cudaStreamSynchronize(stream_));
    const uint64_t gen = scratch_->generation();
    cudaGraph_t g = nullptr;
    DSV4_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    capturing_ = true;
    float* Xc = nullptr;
    try {
      Xc = run_main(nullptr);
      head(Xc, w_.hc_head, w_.norm);
    } catch (...) {
      capturing_ = false;
      cudaStreamEndCapture(stream_, &g);
      if (g) cudaGraphDestroy(g);
      throw;
    }
    capturing_ = false;
    DSV4_CUDA_CHECK(cudaStreamEndCapture(stream_, &g));
    DSV4_CHECK(Xc == X && scratch_->generation() == gen, "cuda", "a decode step's capture moved its buffers");
    graph_stats_ = GraphStats{};
    DSV4_CUDA_CHECK(cudaGraphGetNodes(g, nullptr, &graph_stats_.nodes));
    DSV4_CUDA_CHECK(cudaGraphGetEdges(g, nullptr, nullptr, nullptr, &graph_stats_.edges));
    if (graph_stats_.edges) {
      std::vector<cudaGraphNode_t> from(graph_stats_.edges), to(graph_stats_.edges);
      std::vector<cudaGraphEdgeData> data(graph_stats_.edges);
      DSV4_CUDA_CHECK(cudaGraphGetEdges(g, from.data(), to.data(), data.data(), &graph_stats_.edges));
      for (const cudaGraphEdgeData& e : data) graph_stats_.programmatic += e.type == cudaGraphDependencyTypeProgrammatic;
    }
    // Without cudaGraphInstantiateFlagUseNodePriority the replays would ignore the launches'
    // stream priorities (above). With it, the shared expert's stream at the greatest priority
    // would cost 0.19 ms at B=1 4K (bench/results/2026-11-30-cuda-28.md): it stays at the default.
    DSV4_CUDA_CHECK(cudaGraphInstantiate(&graph_, g, cudaGraphInstantiateFlagUseNodePriority));
    cudaGraphDestroy(g);
    graph_seqs_ = handles;
    graph_pdl_ = pdl_enabled();
    graph_side_ = side_streams_;
    graph_x_ = X;
    graph_gen_ = gen;
  }
  for (const SeqChunk& ch : batch) seq(ch.seq).pos += 1;
}

}  // namespace dsv4::cuda
