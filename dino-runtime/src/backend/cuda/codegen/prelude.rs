//! The definitions generated kernels start with: for NVRTC (warp and block reductions), and
//! for the host C compiler, where a kernel runs as one thread per block so that the tests can
//! check the generated code without a GPU.

/// Definitions every CUDA kernel source starts with.
pub const CUDA_PRELUDE: &str = r#"#define DINO_KERNEL extern "C" __global__ void __launch_bounds__(1024)
/* warp-per-row kernels: lanes per row, rows per block (blocks of 256 threads) */
#define DINO_WARP 32
#define DINO_RPB 8
__device__ __forceinline__ float dino_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float dino_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* Block-wide reductions; every thread of the block calls them and gets the result. The
   block size is a multiple of 32. */
__device__ __forceinline__ float dino_block_sum(float v) {
    __shared__ float part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = dino_warp_sum(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    return dino_warp_sum(lane < warps ? part[lane] : 0.0f);
}
__device__ __forceinline__ float dino_block_max(float v) {
    __shared__ float part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = dino_warp_max(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    return dino_warp_max(lane < warps ? part[lane] : __int_as_float(0xff800000));
}
"#;

/// The same definitions for the host C compiler, one thread per block, one block per grid:
/// the generated code then runs sequentially and must give the CPU kernel's values.
pub const HOST_PRELUDE: &str = r#"#include <math.h>
#include <string.h>
typedef struct { unsigned x, y, z; } dino_dim3;
static dino_dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
#define DINO_KERNEL void
#define __restrict__ restrict
static float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
#define DINO_WARP 1
#define DINO_RPB 1
static float dino_block_sum(float v) { return v; }
static float dino_block_max(float v) { return v; }
static float dino_warp_sum(float v) { return v; }
static float dino_warp_max(float v) { return v; }
static float atomicAdd(float* p, float v) { float o = *p; *p = o + v; return o; }
"#;
