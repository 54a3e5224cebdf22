// DeviceArray<T>: an owning, movable array in GPU memory (plain cudaMalloc), with
// host <-> device copies. A failed allocation names its size.
#pragma once
#include <cstddef>
#include <utility>
#include <vector>

#include "cuda/check.h"

namespace dsv4::cuda {

template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(size_t n) { resize(n); }
  explicit DeviceArray(const std::vector<T>& host) { assign(host); }
  ~DeviceArray() { release(); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  DeviceArray(DeviceArray&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    if (this != &o) {
      release();
      ptr_ = std::exchange(o.ptr_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }

  // Reallocates (contents lost) when n differs from the current size.
  void resize(size_t n) {
    if (n == n_) return;
    release();
    if (n == 0) return;
    cudaError_t e = cudaMalloc(reinterpret_cast<void**>(&ptr_), n * sizeof(T));
    if (e != cudaSuccess) {
      ptr_ = nullptr;
      size_t free_b = 0, total_b = 0;
      cudaGetLastError();
      cudaMemGetInfo(&free_b, &total_b);
      throw Error("cuda", str("cannot allocate ", n * sizeof(T), " bytes on the GPU (", cudaGetErrorString(e), "; ",
                              free_b >> 20, " MiB free of ", total_b >> 20, " MiB)"));
    }
    n_ = n;
  }
  // Grows (contents lost) when fewer than n elements are held.
  void reserve(size_t n) {
    if (n > n_) resize(n);
  }
  void assign(const std::vector<T>& host) {
    resize(host.size());
    if (!host.empty()) DSV4_CUDA_CHECK(cudaMemcpy(ptr_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> to_host() const {
    std::vector<T> h(n_);
    if (n_) DSV4_CUDA_CHECK(cudaMemcpy(h.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }

  T* get() { return ptr_; }
  const T* get() const { return ptr_; }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }
  bool empty() const { return n_ == 0; }

 private:
  void release() {
    if (ptr_) cudaFree(ptr_);
    ptr_ = nullptr;
    n_ = 0;
  }
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

// Copies between host vectors and device pointers on a stream (asynchronous with respect to the host
// only for pinned memory; with pageable vectors the call returns once the copy is staged).
template <typename T>
void upload(T* dst, const T* src, size_t n, cudaStream_t s) {
  if (n) DSV4_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyHostToDevice, s));
}
template <typename T>
void download(T* dst, const T* src, size_t n, cudaStream_t s) {
  if (n) DSV4_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDeviceToHost, s));
}

}  // namespace dsv4::cuda
