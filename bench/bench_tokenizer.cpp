// Tokenizer encode throughput, one thread: the whole text as one string, and line by line.
//   bench_tokenizer --tokenizer=tokenizer.json --text=brown.txt [Google Benchmark flags]
// bench/tokenizer_vs_hf.sh runs it next to Hugging Face tokenizers on the Brown corpus.
// Both keep a cache of words seen before; the warm-up run fills it, as in HF's bench.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "io/tokenizer.h"

namespace {

std::string g_tokenizer_path, g_text_path;

struct Setup {
  dsv4::Tokenizer tokenizer;
  std::string text;
  std::vector<std::string> lines;
};

const Setup& setup() {
  static const Setup s = [] {
    std::ifstream file(g_text_path, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    std::vector<std::string> lines;
    size_t start = 0;
    while (start < text.size()) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      if (end > start) lines.push_back(text.substr(start, end - start));
      start = end + 1;
    }
    return Setup{dsv4::Tokenizer::from_file(g_tokenizer_path), std::move(text), std::move(lines)};
  }();
  return s;
}

void BM_EncodeWhole(benchmark::State& state) {
  const Setup& s = setup();
  size_t ids = s.tokenizer.encode(s.text).size();  // warm-up
  for (auto _ : state) benchmark::DoNotOptimize(s.tokenizer.encode(s.text));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * s.text.size()));
  state.counters["ids"] = static_cast<double>(ids);
}

void BM_EncodeLines(benchmark::State& state) {
  const Setup& s = setup();
  size_t bytes = 0;
  for (const std::string& line : s.lines) bytes += line.size(), s.tokenizer.encode(line);
  for (auto _ : state) {
    for (const std::string& line : s.lines) benchmark::DoNotOptimize(s.tokenizer.encode(line));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}

BENCHMARK(BM_EncodeWhole)->Unit(benchmark::kMillisecond)->MinTime(3.0);
BENCHMARK(BM_EncodeLines)->Unit(benchmark::kMillisecond)->MinTime(3.0);

}  // namespace

int main(int argc, char** argv) {
  // Our two flags out of argv, the rest to Google Benchmark.
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (!std::strncmp(argv[i], "--tokenizer=", 12)) {
      g_tokenizer_path = argv[i] + 12;
    } else if (!std::strncmp(argv[i], "--text=", 7)) {
      g_text_path = argv[i] + 7;
    } else {
      rest.push_back(argv[i]);
    }
  }
  if (g_tokenizer_path.empty() || g_text_path.empty() || !std::ifstream(g_text_path)) {
    std::fprintf(stderr, "usage: %s --tokenizer=tokenizer.json --text=FILE [benchmark flags]\n", argv[0]);
    return 2;
  }
  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
