#include "train/graph_adapter.h"

#include "core/error.h"

namespace dsv4 {

bool graph_supports_packing() { return false; }

GraphResult run_graph(const ModelConfig& c, const Params& params, const PackedRows& rows, const TrainOptions& opt,
                      bool backward) {
  TrainBatch batch;
  batch.B = rows.B;
  batch.T = rows.T;
  batch.ids = rows.ids;
  for (int64_t b = 0; b < rows.B; ++b)
    DSV4_CHECK(graph_supports_packing() || rows.starts[b].size() == 1, "train",
               "row ", b, " packs ", rows.starts[b].size(),
               " documents but the training graph takes no document boundaries yet");
  GraphResult out;
  if (backward) {
    Gradients g = compute_gradients(c, params, batch, opt);
    out.loss = g.loss;
    out.grads = std::move(g.grads);
    out.expert_loads = std::move(g.expert_loads);
  } else {
    TrainResult<float> r = train_step(c, view_of(params), batch, opt, /*backward=*/false);
    out.loss = r.loss;
    out.expert_loads = std::move(r.expert_loads);
  }
  return out;
}

}  // namespace dsv4
