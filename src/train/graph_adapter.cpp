#include "train/graph_adapter.h"

namespace dsv4 {

GraphResult run_graph(const ModelConfig& c, const Params& params, const PackedRows& rows, const TrainOptions& opt,
                      bool backward) {
  TrainBatch batch;
  batch.B = rows.B;
  batch.T = rows.T;
  batch.ids = rows.ids;
  for (int64_t b = 0; b < rows.B; ++b) batch.seq_lens.push_back(rows.lengths(b));
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
