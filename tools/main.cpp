// dsv4: entry point. Dispatches to the registered subcommands; every library
// error reaches the user as one line on stderr and a non-zero exit.
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <string>

#include "cli.h"
#include "core/error.h"

namespace dsv4::cli {
namespace {
struct Entry { std::string summary; CommandFn fn; };
std::map<std::string, Entry>& registry() {
  static std::map<std::string, Entry> r;
  return r;
}
void usage(FILE* out) {
  std::fprintf(out, "usage: dsv4 <command> [options]   (dsv4 <command> --help for its options)\n\ncommands:\n");
  for (auto& [name, e] : registry()) std::fprintf(out, "  %-12s %s\n", name.c_str(), e.summary.c_str());
}
}  // namespace

CommandRegistrar::CommandRegistrar(const char* name, const char* summary, CommandFn fn) {
  registry()[name] = Entry{summary, fn};
}

}  // namespace dsv4::cli

int main(int argc, char** argv) {
  using namespace dsv4::cli;
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  auto it = registry().find(argv[1]);
  if (it == registry().end()) {
    std::fprintf(stderr, "dsv4: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
  }
  std::string prog = std::string("dsv4 ") + argv[1];
  argv[1] = prog.data();
  try {
    return it->second.fn(argc - 1, argv + 1);
  } catch (const dsv4::Error& e) {
    std::fprintf(stderr, "dsv4 %s: error: %s\n", it->first.c_str(), e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsv4 %s: error: %s\n", it->first.c_str(), e.what());
    return 1;
  }
}
