// Selective scan (Mamba / VMamba recurrence) on the CPU: forward and backward.
//
// Plain C++17 with a C ABI and no torch headers, so it compiles in seconds; Python
// (diffmf_kernels/cpu_scan.py) loads it with ctypes and wraps it in an autograd.Function.
//
// Layout ("acc" is float, or double for float64 inputs):
//   u      (Bt, Dm, L) raster order when `orders` is given (shared by the K directions),
//          else (Bt, K*Dm, L)                                           input dtype
//   delta  (Bt, K*Dm, L)                                                input dtype
//   (u, delta, y and the backward's gy, gu, gdelta are either all channel-major, as written, or
//   all token-major: (Bt, L, channels) memory, `token_major` below; everything else is as written)
//   A      (K*Dm, N)                                                    acc
//   B, C   (Bt, K, N, L), both with the strides bc_stride (any: e.g. slices of one projection)  input dtype
//   D, bias (K*Dm) or null                                              acc
//   orders (K, L) int64 or null: direction k visits raster token orders[k, t] at step t
//   y      (Bt, K*Dm, L) raster order                                   acc
//   ckpt   (Bt, K*Dm, ceil(L/TT), N): state at the start of each TT-step chunk, or null
//
// Work split: one task per (batch, direction, block of W channels). A task walks L in
// chunks of TT steps, gathering the chunk's B and C once for its W channels, which run
// side by side in the SIMD lanes (see Scan below).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

constexpr int64_t TT = 64;  // steps per chunk (checkpoint interval of the backward pass)
constexpr int W = 16;      // channels per task, one per SIMD lane

// ---- element loads -------------------------------------------------------------------
inline float load(const float* p, int64_t i) { return p[i]; }
inline double load(const double* p, int64_t i) { return p[i]; }
inline float load(const uint16_t* p, int64_t i) {  // bfloat16 bits -> float
  uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Token gathers and scatters between raster rows and a chunk's buffers (dir: see run_direction
// below; the contiguous cases vectorise). Kept out of line (and restrict): inlined into the large
// unrolled scan code, GCC 12 had spilled these loops' counters to the stack in some
// instantiations, which made the forward 1.5x slower.
#if defined(__GNUC__)
#define DIFFMF_NOINLINE __attribute__((noinline))
#define DIFFMF_PREFETCH(p) __builtin_prefetch(p)
#else
#define DIFFMF_NOINLINE
#define DIFFMF_PREFETCH(p)
#endif
template <typename in_t, typename acc_t>
DIFFMF_NOINLINE void gather(const in_t* __restrict src, const int64_t* __restrict idx, int64_t T, acc_t* __restrict dst,
                            int64_t stride, acc_t add, int dir) {
  const int64_t i0 = T > 0 ? idx[0] : 0;
  if (dir > 0) {
    for (int64_t t = 0; t < T; ++t) dst[t * stride] = load(src, i0 + t) + add;
  } else if (dir < 0) {
    for (int64_t t = 0; t < T; ++t) dst[t * stride] = load(src, i0 - t) + add;
  } else {
    for (int64_t t = 0; t < T; ++t) dst[t * stride] = load(src, idx[t]) + add;
  }
}
template <typename acc_t>
DIFFMF_NOINLINE void scatter(const acc_t* __restrict src, int64_t stride, const int64_t* __restrict idx, int64_t T,
                             acc_t* __restrict dst) {
  for (int64_t t = 0; t < T; ++t) dst[idx[t]] = src[t * stride];
}

// ---- math: branch-free float versions that vectorise; double uses libm ---------------
// Cephes-style expf: x = k ln 2 + r with ln 2 in two parts (LN2_HI - LN2_LO), |r| <= ln2/2; the Horner
// coefficients of e^r = 1 + r + r^2 p(r), highest power first (shared with the AVX-512 softplus below).
constexpr float LN2_HI = 0.693359375f, LN2_LO = 2.12194440e-4f;
constexpr float EXP_SERIES[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float kf = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = (x - kf * LN2_HI) + kf * LN2_LO;
  float p = EXP_SERIES[0];
  for (int i = 1; i < 6; ++i) p = p * r + EXP_SERIES[i];
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(kf) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}
inline double exp_approx(double x) { return std::exp(x); }

// 2^x, for the state decay exp(dt * A) = 2^(dt * A log2 e) with A log2 e precomputed per lane: the scan's
// hottest function (one per step, state and channel), so the fewest instructions that keep float accuracy:
// no Cody-Waite reduction (x arrives in log2 units), exponent bits built directly (x clamped so that 2^k is a
// normal float), Taylor series of 2^r = e^(r ln 2) to degree 6 on |r| <= 1/2 (truncation < 1.2e-7 relative).
// ~17 vector instructions against ~27 for exp_approx(dt * A) as GCC 12 compiled it.
// (ln 2)^i / i!, highest power first: the Horner coefficients of that series, for both versions below.
constexpr float EXP2_SERIES[7] = {1.5403530393381606e-4f, 1.3333558146428443e-3f, 9.6181291076284772e-3f,
                                  5.5504108664821580e-2f, 2.4022650695910071e-1f, 6.9314718055994531e-1f, 1.0f};
inline float exp2_approx(float x) {
  x = std::min(std::max(x, -126.0f), 127.0f);
  const float kf = std::floor(x + 0.5f);
  const float r = x - kf;
  float p = EXP2_SERIES[0];
  for (int i = 1; i < 7; ++i) p = p * r + EXP2_SERIES[i];
  const int32_t bits = (static_cast<int32_t>(kf) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}
inline double exp2_approx(double x) { return std::exp2(x); }

// e[l] = 2^(dt[l] * a2[l]) for a block's W lanes: the state decays of one state and step.
template <typename acc_t>
inline void exp2_lanes(const acc_t* __restrict dt, const acc_t* __restrict a2, acc_t* __restrict e) {
#pragma omp simd
  for (int l = 0; l < W; ++l) e[l] = exp2_approx(dt[l] * a2[l]);
}
#if defined(__AVX512F__)
// With AVX-512 the scale 2^k is one vscalefps, which also gives 0 / inf beyond float's exponent range: no clamp,
// no exponent bits (~10 instructions per 16 lanes against ~17; the forward 15 % faster). Same polynomial and
// rounding of k, so the same values as exp2_approx wherever 2^k is a normal float. The backward's recompute
// keeps the exp2_approx loop: with this it measured ~7 % slower (1 thread, min of 11; cause not found).
template <>
inline void exp2_lanes<float>(const float* __restrict dt, const float* __restrict a2, float* __restrict e) {
  static_assert(W == 16, "one 512-bit vector per block");
  const __m512 x = _mm512_mul_ps(_mm512_loadu_ps(dt), _mm512_loadu_ps(a2));
  const __m512 k = _mm512_roundscale_ps(_mm512_add_ps(x, _mm512_set1_ps(0.5f)),
                                        _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);  // floor(x + 1/2)
  const __m512 r = _mm512_sub_ps(x, k);
  __m512 p = _mm512_set1_ps(EXP2_SERIES[0]);
  for (int i = 1; i < 7; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP2_SERIES[i]));
  _mm512_storeu_ps(e, _mm512_scalef_ps(p, k));
}
#endif

// log(1 + e) for e in [0, 1] as 2 atanh(s), s = e / (2 + e), |s| <= 1/3: the series' Horner coefficients in s^2
// (to s^13), highest power first (shared with the AVX-512 softplus below).
constexpr float ATANH_SERIES[7] = {1.0f / 13.0f, 1.0f / 11.0f, 1.0f / 9.0f, 1.0f / 7.0f, 1.0f / 5.0f, 1.0f / 3.0f,
                                   1.0f};
inline float log1p_unit(float e) {
  const float s = e / (2.0f + e);
  const float s2 = s * s;
  float p = ATANH_SERIES[0];
  for (int i = 1; i < 7; ++i) p = p * s2 + ATANH_SERIES[i];
  return 2.0f * s * p;
}

// torch.nn.functional.softplus with beta=1, threshold=20.
inline float softplus(float x) {
  const float sp = std::max(x, 0.0f) + log1p_unit(exp_approx(-std::fabs(x)));
  return x > 20.0f ? x : sp;
}
inline double softplus(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }

// out[i] = softplus(x[i]) for a chunk's n = T * W values.
template <typename acc_t>
inline void softplus_values(const acc_t* __restrict x, acc_t* __restrict out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = softplus(x[i]);
}
#if defined(__AVX512F__)
// The same function without a division (GCC's vdivps is a third of the compiled loop's time: ~10 cycles per
// 16 values on this core): exp(-|x|) scaled by vscalefps as in exp2_lanes, and the quotient e / (2 + e) of
// log1p_unit from a reciprocal estimate refined by one Newton step (relative error ~2^-28, below float rounding).
// Max relative error 3.2e-7 against float64 over [-60, 40] (the scalar version: 2.6e-7).
template <>
inline void softplus_values<float>(const float* __restrict x, float* __restrict out, int64_t n) {
  const __m512 two = _mm512_set1_ps(2.0f), zero = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    // exp(-|x|) as exp_approx computes it (k ln 2 in two parts, so r keeps float accuracy at large |x|), the
    // scale 2^k by vscalefps
    const __m512 m = _mm512_sub_ps(zero, _mm512_abs_ps(v));
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(m, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r_hi = _mm512_fnmadd_ps(k, _mm512_set1_ps(LN2_HI), m);
    const __m512 r = _mm512_fmadd_ps(k, _mm512_set1_ps(LN2_LO), r_hi);
    __m512 p = _mm512_set1_ps(EXP_SERIES[0]);
    for (int j = 1; j < 6; ++j) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_SERIES[j]));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    const __m512 e = _mm512_scalef_ps(p, k);  // in (0, 1]
    const __m512 d = _mm512_add_ps(e, two);
    const __m512 q0 = _mm512_rcp14_ps(d);
    const __m512 q = _mm512_mul_ps(q0, _mm512_fnmadd_ps(d, q0, two));  // 1 / (2 + e)
    const __m512 sq = _mm512_mul_ps(e, q);
    const __m512 s2 = _mm512_mul_ps(sq, sq);
    __m512 a = _mm512_set1_ps(ATANH_SERIES[0]);
    for (int j = 1; j < 7; ++j) a = _mm512_fmadd_ps(a, s2, _mm512_set1_ps(ATANH_SERIES[j]));
    const __m512 lp = _mm512_mul_ps(_mm512_add_ps(sq, sq), a);  // log1p(e) = 2 atanh(e / (2 + e))
    const __m512 sp = _mm512_add_ps(_mm512_max_ps(v, zero), lp);
    const __mmask16 big = _mm512_cmp_ps_mask(v, _mm512_set1_ps(20.0f), _CMP_GT_OQ);  // torch's threshold
    _mm512_storeu_ps(out + i, _mm512_mask_blend_ps(big, sp, v));
  }
  for (; i < n; ++i) out[i] = softplus(x[i]);
}
#endif
// Its derivative, as torch computes it: z / (z + 1) with z = exp(x), 1 above the threshold.
inline float softplus_grad(float x) {
  const float z = exp_approx(std::min(x, 20.0f));
  return x > 20.0f ? 1.0f : z / (z + 1.0f);
}
inline double softplus_grad(double x) {
  if (x > 20.0) return 1.0;
  const double z = std::exp(x);
  return z / (z + 1.0);
}

struct Problem {
  const void* u;
  const void* delta;
  const void* A;
  const void* B;
  const void* C;
  const void* D;
  const void* bias;
  const int64_t* orders;
  int64_t Bt, K, Dm, N, L;
  bool softplus;
  bool token_major;
  const int64_t* bc_stride;  // B's and C's element strides: batch, direction, state, token
  int64_t blocks() const { return (Dm + W - 1) / W; }  // channel blocks per (batch, direction)
  // Where channel c's token i of a (Bt, channels, L) tensor with `channels` rows sits, relative
  // to its batch: c * lane_stride + i * token_stride.
  int64_t lane_stride() const { return token_major ? 1 : L; }
  int64_t token_stride(int64_t channels) const { return token_major ? channels : 1; }
};

int64_t n_chunks(int64_t L) { return (L + TT - 1) / TT; }

template <typename acc_t>
struct Grads {
  const acc_t* gy;    // (Bt, KD, L), or token-major (Bt, L, KD)
  const acc_t* ckpt;  // (Bt, KD, nch, N)
  acc_t* gu;          // like gy: per channel; the caller sums directions when u is shared
  acc_t* gdelta;      // like gy
  acc_t* gA;          // (Bt, KD, N): per batch; the caller sums
  acc_t* gB;          // (blocks, Bt, K, L, 2N) token-major, per channel block (the caller sums): gB's states at
  acc_t* gC;          // [..., :N] and gC's at [..., N:] of one buffer, so gC = gB + N
  acc_t* gD;          // (Bt, KD) or null
  acc_t* gbias;       // (Bt, KD) or null
};

// row_sums(m, rows, out): out[r] = sum of the W lanes of row r of m ([rows][W]).
//
// The backward pass needs these sums (dL/dB and dL/dC over a block's channels) for every
// step and state. For float rows of 16 lanes with GNU vector extensions, 16 or 8 rows at a
// time go through a shuffle-and-add tree in registers (~3 instructions per row at 16); other
// rows (double, other compilers or targets, a remainder) are summed by halving, each step a
// vectorisable loop. Both add the lanes in the same order, so the sums are bit-identical.
//
// x86 with AVX2 or AVX-512 only, where it was measured (elsewhere, e.g. aarch64, the halving).
#if defined(__AVX2__) && defined(__clang__)
#define DIFFMF_SHUFFLE(x, y, ...) __builtin_shufflevector(x, y, __VA_ARGS__)
#elif defined(__AVX2__) && defined(__GNUC__)
typedef int32_t i32x16 __attribute__((vector_size(64)));
#define DIFFMF_SHUFFLE(x, y, ...) __builtin_shuffle(x, y, (i32x16){__VA_ARGS__})
#endif

#ifdef DIFFMF_SHUFFLE
typedef float f32x16 __attribute__((vector_size(64)));

constexpr int bit_reverse(int r, int bits) {
  int out = 0;
  for (int b = 0; b < bits; ++b) out |= ((r >> b) & 1) << (bits - 1 - b);
  return out;
}

// R = 16 or 8 rows. Level k adds the two halves of 2^(4-k)-lane blocks of two vectors, keeping
// both vectors' partials side by side (a lone vector is paired with itself). Rows fed in
// bit-reversed order come out in order: row r's sum at lane r * 16 / R.
template <int R>
inline void row_sums_tree(const float* m, float* out) {
  static_assert(R == 16 || R == 8, "tree of 16 or 8 rows");
  constexpr int bits = R == 16 ? 4 : 3;
  f32x16 v[R];
  for (int r = 0; r < R; ++r) std::memcpy(&v[r], m + W * bit_reverse(r, bits), sizeof(f32x16));
  int n = R;
  for (int k = 0; k < n / 2; ++k)
    v[k] = DIFFMF_SHUFFLE(v[2 * k], v[2 * k + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
           DIFFMF_SHUFFLE(v[2 * k], v[2 * k + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  n /= 2;
  for (int k = 0; k < n / 2; ++k)
    v[k] = DIFFMF_SHUFFLE(v[2 * k], v[2 * k + 1], 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27) +
           DIFFMF_SHUFFLE(v[2 * k], v[2 * k + 1], 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
  n /= 2;
  for (int k = 0; k < n / 2; ++k)
    v[k] = DIFFMF_SHUFFLE(v[2 * k], v[2 * k + 1], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29) +
           DIFFMF_SHUFFLE(v[2 * k], v[2 * k + 1], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
  if (n == 2) v[1] = v[0];
  v[0] = DIFFMF_SHUFFLE(v[0], v[1], 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30) +
         DIFFMF_SHUFFLE(v[0], v[1], 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
  float f[16];
  std::memcpy(f, &v[0], sizeof f);
  for (int r = 0; r < R; ++r) out[r] = f[r * 16 / R];
}
#endif

template <typename acc_t>
void row_sums(acc_t* m, int64_t rows, acc_t* out) {
  int64_t r0 = 0;
#ifdef DIFFMF_SHUFFLE
  if constexpr (sizeof(acc_t) == 4 && W == 16) {
    for (; r0 + 16 <= rows; r0 += 16) row_sums_tree<16>(m + r0 * W, out + r0);
    if (r0 + 8 <= rows) {
      row_sums_tree<8>(m + r0 * W, out + r0);
      r0 += 8;
    }
  }
#endif
  for (int w = W / 2; w > 0; w /= 2) {
    for (int64_t r = r0; r < rows; ++r) {
      acc_t* row = m + r * W;
#pragma omp simd
      for (int l = 0; l < w; ++l) row[l] += row[l + w];
    }
  }
  for (int64_t r = r0; r < rows; ++r) out[r] = m[r * W];
}

// ---- a chunk's per-lane rows <-> its [t][lane] buffer ----------------------------------
//
// Channel-major (tstride 1): lane l's tokens live in row base + l * stride (one channel each);
// the chunk visits them in idx order. Row directions visit a contiguous run (idx[t] = idx[0] +- t):
// there, for float buffers with vector extensions, 16 steps x 16 lanes move as one block (16 vector
// loads, an in-register transpose, 16 vector stores) instead of 256 scalar loads and stores. Column
// directions and other orders take the scalar gather/scatter.
//
// Token-major (stride 1, tstride = channels): the lanes of token i are adjacent at base + i * tstride,
// so every step of every direction is one contiguous load or store of the live lanes.

// +1 / -1 when idx[t] = idx[0] +- t for the whole chunk, else 0.
inline int run_direction(const int64_t* idx, int64_t T) {
  bool up = true, down = true;
  for (int64_t t = 1; t < T; ++t) {
    up = up && idx[t] == idx[0] + t;
    down = down && idx[t] == idx[0] - t;
  }
  return up ? 1 : (down ? -1 : 0);
}

// Only where a 16-float vector is one register (AVX-512): built for AVX2, GCC 12 lowers these
// transposes so badly that row directions measured 1.2-1.5x slower than the scalar loops (the
// lane-sum tree above still gains there).
#if defined(DIFFMF_SHUFFLE) && defined(__AVX512F__)
#define DIFFMF_TRANSPOSE 1
// v[r][c] -> v[c][r]: stage k swaps bit k of the row index with bit k of the column index.
inline void transpose16(f32x16* v) {
  for (int r = 0; r < 16; r += 2) {
    const f32x16 a = v[r], b = v[r + 1];
    v[r] = DIFFMF_SHUFFLE(a, b, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
    v[r + 1] = DIFFMF_SHUFFLE(a, b, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
  }
  for (int r = 0; r < 16; ++r) {
    if (r & 2) continue;
    const f32x16 a = v[r], b = v[r + 2];
    v[r] = DIFFMF_SHUFFLE(a, b, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);
    v[r + 2] = DIFFMF_SHUFFLE(a, b, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
  }
  for (int r = 0; r < 16; ++r) {
    if (r & 4) continue;
    const f32x16 a = v[r], b = v[r + 4];
    v[r] = DIFFMF_SHUFFLE(a, b, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
    v[r + 4] = DIFFMF_SHUFFLE(a, b, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
  }
  for (int r = 0; r < 8; ++r) {
    const f32x16 a = v[r], b = v[r + 8];
    v[r] = DIFFMF_SHUFFLE(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    v[r + 8] = DIFFMF_SHUFFLE(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  }
}

inline f32x16 reversed(f32x16 v) { return DIFFMF_SHUFFLE(v, v, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0); }

template <typename in_t>
inline f32x16 load16(const in_t* p) {
  float f[16];
  for (int i = 0; i < 16; ++i) f[i] = load(p, i);
  f32x16 v;
  std::memcpy(&v, f, sizeof v);
  return v;
}
// 8 elements from lo, then 8 from hi.
template <typename in_t>
inline f32x16 load_halves(const in_t* lo, const in_t* hi) {
  float f[16];
  for (int i = 0; i < 8; ++i) f[i] = load(lo, i);
  for (int i = 0; i < 8; ++i) f[8 + i] = load(hi, i);
  f32x16 v;
  std::memcpy(&v, f, sizeof v);
  return v;
}
#endif

// Bc[n][t] = B[idx[t] * tstride + n * nstride] (and C alike) for a chunk: B and C given token-major (a token's
// states together, e.g. slices of one projection). With AVX-512 and N = 16 or 8 contiguous states, 16 tokens at
// a time go through one in-register transpose (for N = 8, B's states in the low half and C's in the high half).
template <typename in_t, typename acc_t>
DIFFMF_NOINLINE void gather_states(const in_t* __restrict B, const in_t* __restrict C, int64_t nstride,
                                   int64_t tstride, const int64_t* __restrict idx, int64_t T, int64_t N,
                                   acc_t* __restrict Bc, acc_t* __restrict Cc) {
  int64_t t0 = 0;
#ifdef DIFFMF_TRANSPOSE
  if constexpr (sizeof(acc_t) == 4) {
    if (nstride == 1 && (N == 16 || N == 8)) {
      for (; t0 + 16 <= T; t0 += 16) {
        f32x16 v[16];
        if (N == 8) {
          if (C == B + 8) {  // C's states right after B's (one projection, SS2D's x_proj): one 16-element load
            // per token instead of two halves, 6-7 % off the N = 8 forward (2-core box, token-major, 1 and 2 threads)
            for (int i = 0; i < 16; ++i) v[i] = load16(B + idx[t0 + i] * tstride);
          } else {
            for (int i = 0; i < 16; ++i) v[i] = load_halves(B + idx[t0 + i] * tstride, C + idx[t0 + i] * tstride);
          }
          transpose16(v);
          for (int n = 0; n < 8; ++n) {
            std::memcpy(Bc + n * TT + t0, &v[n], sizeof(f32x16));
            std::memcpy(Cc + n * TT + t0, &v[8 + n], sizeof(f32x16));
          }
          continue;
        }
        for (int which = 0; which < 2; ++which) {
          const in_t* src = which ? C : B;
          acc_t* dst = which ? Cc : Bc;
          for (int i = 0; i < 16; ++i) v[i] = load16(src + idx[t0 + i] * tstride);
          transpose16(v);
          for (int n = 0; n < 16; ++n) std::memcpy(dst + n * TT + t0, &v[n], sizeof(f32x16));
        }
      }
    }
  }
#endif
  for (int64_t t = t0; t < T; ++t) {
    const int64_t i = idx[t] * tstride;
    for (int64_t n = 0; n < N; ++n) {
      Bc[n * TT + t] = load(B, i + n * nstride);
      Cc[n * TT + t] = load(C, i + n * nstride);
    }
  }
}

// dst[t][l] = row_l[idx[t]] + add[l] for the nl live lanes (padding lanes untouched).
template <typename in_t, typename acc_t>
DIFFMF_NOINLINE void gather_lanes(const in_t* base, int64_t stride, int64_t tstride, int64_t nl, const int64_t* idx,
                                  int64_t T, int dir, acc_t* dst, const acc_t* add) {
  if (tstride != 1) {
    for (int64_t t = 0; t < T; ++t) {
      const in_t* src = base + idx[t] * tstride;
      acc_t* out = dst + t * W;
      if (nl == W) {
#pragma omp simd
        for (int l = 0; l < W; ++l) out[l] = load(src, l) + add[l];
      } else {
        for (int64_t l = 0; l < nl; ++l) out[l] = load(src, l) + add[l];
      }
    }
    return;
  }
  int64_t t0 = 0;
#ifdef DIFFMF_TRANSPOSE
  if constexpr (sizeof(acc_t) == 4 && W == 16) {
    const f32x16 zero = {};
    f32x16 addv;
    std::memcpy(&addv, add, sizeof addv);
    for (; dir != 0 && t0 + 16 <= T; t0 += 16) {
      f32x16 v[16];
      const int64_t start = dir > 0 ? idx[t0] : idx[t0] - 15;
      for (int l = 0; l < 16; ++l) {
        const f32x16 row = l < nl ? load16(base + l * stride + start) : zero;
        v[l] = dir > 0 ? row : reversed(row);
      }
      transpose16(v);
      for (int i = 0; i < 16; ++i) {
        const f32x16 out = v[i] + addv;
        std::memcpy(dst + (t0 + i) * W, &out, sizeof out);
      }
    }
  }
#endif
  for (int64_t l = 0; l < nl; ++l) gather(base + l * stride, idx + t0, T - t0, dst + t0 * W + l, W, add[l], dir);
}

// A token's W float lanes to a 64-byte-aligned line of a token-major output with a non-temporal store; false (nothing
// written) where that does not apply. The outputs (y; the backward's gu and gdelta) are megabytes written once per
// call: an ordinary store first reads its line, and those waiting stores held up every store behind them (the
// chunk buffers, the state). Removing the y stores altogether made the N = 8 forward 24 % faster; streaming them,
// 14-19 % (2-core box, 1 and 2 threads; a 640x512 frame 5-10 %: bench/RESULTS.md, tenth session).
template <typename acc_t>
inline bool stream_line(acc_t* out, const acc_t* in) {
#if defined(__AVX512F__)
  if constexpr (sizeof(acc_t) == 4 && W == 16) {
    if ((reinterpret_cast<uintptr_t>(out) & 63) == 0) {
      _mm512_stream_ps(reinterpret_cast<float*>(out), _mm512_loadu_ps(reinterpret_cast<const float*>(in)));
      return true;
    }
  }
#endif
  (void)out;
  (void)in;
  return false;
}

// One step's dL/dB and dL/dC (N lane sums each) to their token's row of the token-major gradient buffer, where C's
// follow B's (C = B + N). Stored as one line per 16 states (N = 8: both at once) with stream_line where it applies:
// in the (N, L) layout of before, every step had touched 2N lines 4L bytes apart with single floats, and those
// stores cost 15-20 % of the N = 8 backward (a knock-out; 2-core box, tenth session).
template <typename acc_t>
inline void store_states(const acc_t* b, const acc_t* c, int64_t N, acc_t* outB, acc_t* outC) {
  if (N == 8 && W == 16) {
    acc_t both[16];
    for (int i = 0; i < 8; ++i) both[i] = b[i];
    for (int i = 0; i < 8; ++i) both[8 + i] = c[i];
    if (stream_line(outB, both)) return;
  } else if (N == 16 && W == 16 && stream_line(outB, b)) {
    if (stream_line(outC, c)) return;
    for (int64_t n = 0; n < N; ++n) outC[n] = c[n];
    return;
  }
  for (int64_t n = 0; n < N; ++n) outB[n] = b[n];
  for (int64_t n = 0; n < N; ++n) outC[n] = c[n];
}

// After streaming stores: they are weakly ordered, so fenced before the task reports done.
inline void stream_fence() {
#if defined(__AVX512F__)
  _mm_sfence();
#endif
}

// row_l[idx[t]] = src[t][l] for the nl live lanes.
template <typename acc_t>
DIFFMF_NOINLINE void scatter_lanes(const acc_t* src, acc_t* base, int64_t stride, int64_t tstride, int64_t nl,
                                   const int64_t* idx, int64_t T, int dir) {
  if (tstride != 1) {
    bool streamed = false;
    for (int64_t t = 0; t < T; ++t) {
      acc_t* out = base + idx[t] * tstride;
      const acc_t* in = src + t * W;
      if (nl == W) {
        if (stream_line(out, in)) {
          streamed = true;
          continue;
        }
        // a fixed-size copy the compiler turns into vector moves (memcpy of nl: a libc call per step)
#pragma omp simd
        for (int l = 0; l < W; ++l) out[l] = in[l];
      } else {
        for (int64_t l = 0; l < nl; ++l) out[l] = in[l];
      }
    }
    if (streamed) stream_fence();
    return;
  }
  int64_t t0 = 0;
#ifdef DIFFMF_TRANSPOSE
  if constexpr (sizeof(acc_t) == 4 && W == 16) {
    for (; dir != 0 && t0 + 16 <= T; t0 += 16) {
      f32x16 v[16];
      for (int i = 0; i < 16; ++i) std::memcpy(&v[i], src + (t0 + i) * W, sizeof(f32x16));
      transpose16(v);
      const int64_t start = dir > 0 ? idx[t0] : idx[t0] - 15;
      for (int64_t l = 0; l < nl; ++l) {
        const f32x16 row = dir > 0 ? v[l] : reversed(v[l]);
        std::memcpy(base + l * stride + start, &row, sizeof row);
      }
    }
  }
#endif
  for (int64_t l = 0; l < nl; ++l) scatter(src + t0 * W + l, W, idx + t0, T - t0, base + l * stride);
}

// Prefetches step t's share of the next chunk's token rows (see Scan::chunk_lines): LINES addresses per step, a
// null one skipped. Spread over the steps, the loads overlap the recurrence; issued all at once before a chunk,
// as many prefetches as the gathers' loads measured no gain (the line fill buffers are few).
constexpr int LINES = 4;
inline void prefetch_step(const void* const* lines, int64_t count, int64_t t) {
  if (LINES * t >= count) return;
  for (int i = 0; i < LINES; ++i) {
    if (lines[LINES * t + i]) DIFFMF_PREFETCH(lines[LINES * t + i]);
  }
}

// The forward recurrence over one chunk of T steps: h ([n][lane] state) in and out, y_t = C_t . h_t + D u_t to
// y[t][lane]. A function of restrict pointers: written inline in the task on std::vector data, GCC 12 reloaded
// the buffers' addresses from the stack every state and step, kept a vector on the stack and summed y lane by
// lane with scalar instructions (it could not rule out aliasing).
template <typename acc_t, int NC>
void forward_chunk(int64_t T, int64_t N, const acc_t* __restrict dt, const acc_t* __restrict du,
                   const acc_t* __restrict u, const acc_t* __restrict Bc, const acc_t* __restrict Cc,
                   const acc_t* __restrict A2, const acc_t* __restrict Dl, acc_t* __restrict h,
                   acc_t* __restrict y, const void* const* __restrict lines, int64_t nlines) {
  const int64_t states = NC > 0 ? NC : N;
  for (int64_t t = 0; t < T; ++t) {
    prefetch_step(lines, nlines, t);
    acc_t yt[W];
#pragma omp simd
    for (int l = 0; l < W; ++l) yt[l] = 0;
    for (int64_t n = 0; n < states; ++n) {
      const acc_t bn = Bc[n * TT + t], cn = Cc[n * TT + t];
      acc_t e[W];
      exp2_lanes(dt + t * W, A2 + n * W, e);
#pragma omp simd
      for (int l = 0; l < W; ++l) {
        h[n * W + l] = e[l] * h[n * W + l] + du[t * W + l] * bn;
        yt[l] += cn * h[n * W + l];
      }
    }
#pragma omp simd
    for (int l = 0; l < W; ++l) y[t * W + l] = yt[l] + Dl[l] * u[t * W + l];
  }
}

// One task = one block of up to W channels of one (batch, direction). The W channels sit
// in the SIMD lanes: every per-step quantity is a W-vector, B and C are broadcasts, and
// the forward pass has no horizontal reduction at all. Buffers are [t][lane] or
// [t][n][lane]. Padding lanes carry dt*u = 0, A = 0 and gy = 0, so they stay zero.
template <typename in_t, typename acc_t, int NC>
struct Scan {
  const Problem& p;
  const int64_t KD;
  explicit Scan(const Problem& prob) : p(prob), KD(prob.K * prob.Dm) {}
  // The state size, a compile-time constant in the fixed-N instantiations so loops unroll.
  int64_t nstate() const { return NC > 0 ? NC : p.N; }

  struct Work {
    int64_t b, k, d0, nl;  // batch, direction, first channel, live lanes
    int run = 0;           // run_direction() of the current chunk
    std::vector<int64_t> idx;
    std::vector<acc_t> Bc, Cc, At, At2, Dl, biasl, x, dt, u, du, gy, a, h, gh, gBl, gCl, gBt, gCt, h0, state;
    Work(int64_t N, int64_t b_, int64_t k_, int64_t d0_, int64_t nl_, bool backward)
        : b(b_), k(k_), d0(d0_), nl(nl_), idx(TT), Bc(TT * N), Cc(TT * N), At(N * W), At2(N * W), Dl(W), biasl(W),
          x(TT * W), dt(TT * W), u(TT * W), du(TT * W), gy(backward ? TT * W : 0),
          a(backward ? TT * N * W : 0), h(backward ? TT * N * W : 0), gh(backward ? N * W : 0),
          gBl(backward ? N * W : 0), gCl(backward ? N * W : 0), gBt(backward ? N : 0), gCt(backward ? N : 0), h0(N * W), state(N * W, acc_t(0)) {}
  };

  int64_t channel(const Work& w, int64_t l) const { return w.k * p.Dm + w.d0 + l; }
  // The raster token the task's direction visits at step `step`.
  int64_t token(const Work& w, int64_t step) const { return p.orders ? p.orders[w.k * p.L + step] : step; }
  // Offset of the task's first channel in a (Bt, KD, L) tensor (delta, y, gy, gu, gdelta), either layout.
  int64_t row0(const Work& w) const { return w.b * KD * p.L + channel(w, 0) * p.lane_stride(); }
  // u's channels (shared by the K directions when orders are given), and where the task's first lane of u sits.
  int64_t u_channels() const { return p.orders ? p.Dm : KD; }
  const in_t* u_row0(const Work& w) const {
    const int64_t lane0 = p.orders ? w.d0 : channel(w, 0);
    return static_cast<const in_t*>(p.u) + w.b * u_channels() * p.L + lane0 * p.lane_stride();
  }
  // The task's (batch, direction) in B and C.
  int64_t bc_offset(const Work& w) const { return w.b * p.bc_stride[0] + w.k * p.bc_stride[1]; }
  const in_t* B_of(const Work& w) const { return static_cast<const in_t*>(p.B) + bc_offset(w); }
  const in_t* C_of(const Work& w) const { return static_cast<const in_t*>(p.C) + bc_offset(w); }

  // Per-lane constants: A transposed to [n][lane] (and times log2 e, for exp2), D, delta_bias (zero in padding
  // lanes).
  void setup(Work& w) const {
    const int64_t N = nstate();
    const acc_t* A = static_cast<const acc_t*>(p.A);
    std::fill(w.At.begin(), w.At.end(), acc_t(0));
    std::fill(w.Dl.begin(), w.Dl.end(), acc_t(0));
    std::fill(w.biasl.begin(), w.biasl.end(), acc_t(0));
    for (int64_t l = 0; l < w.nl; ++l) {
      const int64_t c = channel(w, l);
      for (int64_t n = 0; n < N; ++n) w.At[n * W + l] = A[c * N + n];
      if (p.D) w.Dl[l] = static_cast<const acc_t*>(p.D)[c];
      if (p.bias) w.biasl[l] = static_cast<const acc_t*>(p.bias)[c];
    }
    for (int64_t i = 0; i < N * W; ++i) w.At2[i] = w.At[i] * acc_t(1.4426950408889634);  // A log2 e
  }

  // Chunk [s, s+T): token indices, B and C in scan order ([n][t]), and per lane
  // x = delta + bias, dt, u and dt*u ([t][lane]).
  void load_chunk(Work& w, int64_t s, int64_t T) const {
    const int64_t N = nstate();
    for (int64_t t = 0; t < T; ++t) w.idx[t] = token(w, s + t);
    w.run = run_direction(w.idx.data(), T);
    const int64_t* bs = p.bc_stride;
    const in_t* Bp = B_of(w);
    const in_t* Cp = C_of(w);
    if (bs[3] == 1) {  // each state's tokens contiguous (channel-major)
      for (int64_t n = 0; n < N; ++n) {
        gather(Bp + n * bs[2], w.idx.data(), T, &w.Bc[n * TT], 1, acc_t(0), w.run);
        gather(Cp + n * bs[2], w.idx.data(), T, &w.Cc[n * TT], 1, acc_t(0), w.run);
      }
    } else {  // e.g. token-major slices of a (Bt, L, ...) projection: a token's states together
      gather_states(Bp, Cp, bs[2], bs[3], w.idx.data(), T, N, w.Bc.data(), w.Cc.data());
    }
    std::fill(w.x.begin(), w.x.end(), acc_t(0));
    std::fill(w.u.begin(), w.u.end(), acc_t(0));
    const acc_t zero[W] = {};
    gather_lanes(static_cast<const in_t*>(p.delta) + row0(w), p.lane_stride(), p.token_stride(KD), w.nl,
                 w.idx.data(), T, w.run, w.x.data(), w.biasl.data());
    gather_lanes(u_row0(w), p.lane_stride(), p.token_stride(u_channels()), w.nl, w.idx.data(), T, w.run, w.u.data(),
                 zero);
    if (p.softplus) {
      softplus_values(w.x.data(), w.dt.data(), T * W);
    } else {
      for (int64_t i = 0; i < T * W; ++i) w.dt[i] = w.x[i];
    }
    for (int64_t i = 0; i < T * W; ++i) w.du[i] = w.dt[i] * w.u[i];
  }

  // Token-major inputs: the lines of chunk [s, s+TT)'s tokens (clipped to L), LINES per token: delta's and u's
  // (a token's lanes are one line), B's and C's (null unless a token's states are together) — for the chunk before
  // it to prefetch a token per step (prefetch_step). Returns how many addresses, 0 for channel-major inputs (rows
  // there are one lane each and left to the hardware prefetchers).
  int64_t chunk_lines(const Work& w, int64_t s, const void** lines) const {
    if (!p.token_major || s < 0 || s >= p.L) return 0;
    const int64_t T = std::min(TT, p.L - s), uc = u_channels();
    const in_t* u0 = u_row0(w);
    const in_t* d0 = static_cast<const in_t*>(p.delta) + row0(w);
    const int64_t* bs = p.bc_stride;
    const bool bc_rows = bs[3] != 1;
    const in_t* B0 = B_of(w);
    const in_t* C0 = C_of(w) + (nstate() - 1) * bs[2];  // the last state: B's and C's span ends there
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = token(w, s + t);
      const void** at = lines + LINES * t;
      at[0] = d0 + i * KD;
      at[1] = u0 + i * uc;
      at[2] = bc_rows ? B0 + i * bs[3] : nullptr;
      at[3] = bc_rows ? C0 + i * bs[3] : nullptr;
    }
    return LINES * T;
  }

  // y, and the state at each chunk start when ckpt is given (for the backward pass).
  void forward_task(Work& w, acc_t* y, acc_t* ckpt) const {
    const int64_t N = nstate(), nch = n_chunks(p.L);
    setup(w);
    const void* lines[LINES * TT];
    for (int64_t j = 0; j < nch; ++j) {
      const int64_t s = j * TT, T = std::min(TT, p.L - s);
      load_chunk(w, s, T);
      if (ckpt) {
        for (int64_t l = 0; l < w.nl; ++l)
          for (int64_t n = 0; n < N; ++n) ckpt[((w.b * KD + channel(w, l)) * nch + j) * N + n] = w.state[n * W + l];
      }
      // y goes to [t][lane] in x's buffer (x is not needed any more).
      const int64_t nlines = chunk_lines(w, s + TT, lines);
      forward_chunk<acc_t, NC>(T, N, w.dt.data(), w.du.data(), w.u.data(), w.Bc.data(), w.Cc.data(), w.At2.data(),
                               w.Dl.data(), w.state.data(), w.x.data(), lines, nlines);
      scatter_lanes(w.x.data(), y + row0(w), p.lane_stride(), p.token_stride(KD), w.nl, w.idx.data(), T, w.run);
    }
  }

  void backward_task(Work& w, const Grads<acc_t>& g, int64_t blk) const {
    const int64_t N = nstate(), nch = n_chunks(p.L);
    setup(w);
    std::vector<acc_t> gA(N * W, acc_t(0)), gdt(TT * W), gu(TT * W);
    acc_t gD[W] = {}, gbias[W] = {};
    std::fill(w.gh.begin(), w.gh.end(), acc_t(0));  // carry: a_{t+1} * dL/dh_{t+1}
    const acc_t* At = w.At.data();
    acc_t* gB = g.gB + ((blk * p.Bt + w.b) * p.K + w.k) * p.L * 2 * N;
    acc_t* gC = g.gC + ((blk * p.Bt + w.b) * p.K + w.k) * p.L * 2 * N;
    for (int64_t j = nch - 1; j >= 0; --j) {
      const int64_t s = j * TT, T = std::min(TT, p.L - s);
      load_chunk(w, s, T);
      std::fill(w.gy.begin(), w.gy.end(), acc_t(0));
      std::fill(w.h0.begin(), w.h0.end(), acc_t(0));
      const acc_t zero[W] = {};
      gather_lanes(g.gy + row0(w), p.lane_stride(), p.token_stride(KD), w.nl, w.idx.data(), T, w.run, w.gy.data(),
                   zero);
      for (int64_t l = 0; l < w.nl; ++l) {
        const int64_t c = channel(w, l);
        for (int64_t n = 0; n < N; ++n) w.h0[n * W + l] = g.ckpt[((w.b * KD + c) * nch + j) * N + n];
      }
      // Recompute a_t and h_t of the chunk from its checkpoint.
      for (int64_t t = 0; t < T; ++t) {
        const acc_t* dt = &w.dt[t * W];
        const acc_t* du = &w.du[t * W];
        const acc_t* bt = &w.Bc[t];
        for (int64_t n = 0; n < N; ++n) {
          const acc_t bn = bt[n * TT];
          const acc_t* hp = t > 0 ? &w.h[((t - 1) * N + n) * W] : &w.h0[n * W];
          acc_t* at = &w.a[(t * N + n) * W];
          acc_t* ht = &w.h[(t * N + n) * W];
          const acc_t* a2 = &w.At2[n * W];
#pragma omp simd
          for (int l = 0; l < W; ++l) {
            at[l] = exp2_approx(dt[l] * a2[l]);
            ht[l] = at[l] * hp[l] + du[l] * bn;
          }
        }
      }
      // Reverse: gh_t = gy_t * C_t + a_{t+1} * gh_{t+1}, and everything that reads it.
      for (int64_t t = T - 1; t >= 0; --t) {
        const acc_t* dt = &w.dt[t * W];
        const acc_t* du = &w.du[t * W];
        const acc_t* gy = &w.gy[t * W];
        const acc_t* bt = &w.Bc[t];
        const acc_t* ct = &w.Cc[t];
        acc_t sdu[W] = {}, sda[W] = {};
        for (int64_t n = 0; n < N; ++n) {
          const acc_t bn = bt[n * TT], cn = ct[n * TT];
          const acc_t* an = At + n * W;
          const acc_t* at = &w.a[(t * N + n) * W];
          const acc_t* ht = &w.h[(t * N + n) * W];
          const acc_t* hp = t > 0 ? &w.h[((t - 1) * N + n) * W] : &w.h0[n * W];
          acc_t* cr = &w.gh[n * W];
          acc_t* gbl = &w.gBl[n * W];
          acc_t* gcl = &w.gCl[n * W];
          acc_t* gan = &gA[n * W];
#pragma omp simd
          for (int l = 0; l < W; ++l) {
            const acc_t gh = cr[l] + gy[l] * cn;
            gcl[l] = gy[l] * ht[l];
            gbl[l] = gh * du[l];
            sdu[l] += gh * bn;
            const acc_t gl = gh * hp[l] * at[l];  // dL / d(dt * A[n])
            sda[l] += gl * an[l];
            gan[l] += gl * dt[l];
            cr[l] = at[l] * gh;
          }
        }
        // dL/dB and dL/dC of this step sum over the block's channels (lanes).
        row_sums(w.gBl.data(), N, w.gBt.data());
        row_sums(w.gCl.data(), N, w.gCt.data());
        store_states(w.gBt.data(), w.gCt.data(), N, gB + w.idx[t] * 2 * N, gC + w.idx[t] * 2 * N);
#pragma omp simd
        for (int l = 0; l < W; ++l) {
          gdt[t * W + l] = sda[l] + sdu[l] * w.u[t * W + l];
          gu[t * W + l] = sdu[l] * dt[l] + w.Dl[l] * gy[l];
        }
      }
      if (p.softplus) {
        for (int64_t i = 0; i < T * W; ++i) gdt[i] *= softplus_grad(w.x[i]);
      }
      for (int64_t t = 0; t < T; ++t) {
        const acc_t* gdtt = &gdt[t * W];
        const acc_t* gyt = &w.gy[t * W];
        const acc_t* ut = &w.u[t * W];
#pragma omp simd
        for (int l = 0; l < W; ++l) {
          gD[l] += gyt[l] * ut[l];
          gbias[l] += gdtt[l];
        }
      }
      const int64_t ls = p.lane_stride(), ts = p.token_stride(KD);
      scatter_lanes(gu.data(), g.gu + row0(w), ls, ts, w.nl, w.idx.data(), T, w.run);
      scatter_lanes(gdt.data(), g.gdelta + row0(w), ls, ts, w.nl, w.idx.data(), T, w.run);
    }
    for (int64_t l = 0; l < w.nl; ++l) {
      const int64_t c = channel(w, l);
      for (int64_t n = 0; n < N; ++n) g.gA[(w.b * KD + c) * N + n] = gA[n * W + l];
      if (g.gD) g.gD[w.b * KD + c] = gD[l];
      if (g.gbias) g.gbias[w.b * KD + c] = gbias[l];
    }
    stream_fence();  // store_states
  }

  // Task t -> (batch, direction, channel block).
  Work work(int64_t task, bool backward) const {
    const int64_t blk = task % p.blocks(), k = (task / p.blocks()) % p.K, b = task / (p.blocks() * p.K);
    const int64_t d0 = blk * W;
    return Work(nstate(), b, k, d0, std::min<int64_t>(W, p.Dm - d0), backward);
  }
};

template <typename in_t, typename acc_t, int NC>
void run_forward(const Problem& p, void* y, void* ckpt, int threads) {
  const Scan<in_t, acc_t, NC> scan(p);
  const int64_t tasks = p.Bt * p.K * p.blocks();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t task = 0; task < tasks; ++task) {
    auto w = scan.work(task, false);
    scan.forward_task(w, static_cast<acc_t*>(y), static_cast<acc_t*>(ckpt));
  }
}

template <typename in_t, typename acc_t, int NC>
void run_backward(const Problem& p, const Grads<acc_t>& g, int threads) {
  const Scan<in_t, acc_t, NC> scan(p);
  const int64_t tasks = p.Bt * p.K * p.blocks();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t task = 0; task < tasks; ++task) {
    auto w = scan.work(task, true);
    scan.backward_task(w, g, task % p.blocks());
  }
}

// dtype codes shared with cpu_scan.py
enum : int { F32 = 0, BF16 = 1, F64 = 2 };

// N = 16 (the benchmark's and base preset's state size) and 8 (the tiny preset's) get fully
// unrolled instantiations; other N use the runtime-N one. Float64 (tests only) always does,
// which keeps the compile short.
template <typename in_t, typename acc_t>
int dispatch_fwd(const Problem& p, void* y, void* ckpt, int threads) {
  if constexpr (sizeof(acc_t) == 4) {
    if (p.N == 16) {
      run_forward<in_t, acc_t, 16>(p, y, ckpt, threads);
      return 0;
    }
    if (p.N == 8) {
      run_forward<in_t, acc_t, 8>(p, y, ckpt, threads);
      return 0;
    }
  }
  run_forward<in_t, acc_t, 0>(p, y, ckpt, threads);
  return 0;
}

template <typename in_t, typename acc_t>
int dispatch_bwd(const Problem& p, void* const* out, int threads) {
  const Grads<acc_t> g{
      static_cast<const acc_t*>(out[0]), static_cast<const acc_t*>(out[1]), static_cast<acc_t*>(out[2]),
      static_cast<acc_t*>(out[3]), static_cast<acc_t*>(out[4]), static_cast<acc_t*>(out[5]),
      static_cast<acc_t*>(out[6]), static_cast<acc_t*>(out[7]), static_cast<acc_t*>(out[8])};
  if constexpr (sizeof(acc_t) == 4) {
    if (p.N == 16) {
      run_backward<in_t, acc_t, 16>(p, g, threads);
      return 0;
    }
    if (p.N == 8) {
      run_backward<in_t, acc_t, 8>(p, g, threads);
      return 0;
    }
  }
  run_backward<in_t, acc_t, 0>(p, g, threads);
  return 0;
}

Problem make_problem(const void* u, const void* delta, const void* A, const void* B, const void* C,
                     const void* D, const void* bias, const int64_t* orders, int64_t Bt, int64_t K,
                     int64_t Dm, int64_t N, int64_t L, int flags, const int64_t* bc_stride) {
  return Problem{u, delta, A, B, C, D, bias, orders, Bt, K, Dm, N, L, (flags & 1) != 0, (flags & 2) != 0, bc_stride};
}

}  // namespace

extern "C" {

int64_t diffmf_scan_chunk() { return TT; }
int64_t diffmf_scan_lanes() { return W; }

// flags: bit 0 softplus on delta + bias, bit 1 token-major u, delta, y (and gy, gu, gdelta).
// bc_stride: 4 element strides of B and C (batch, direction, state, token).
// Returns 0 on success, -1 for an unknown dtype code.
int diffmf_scan_fwd(int dtype, const void* u, const void* delta, const void* A, const void* B, const void* C,
                    const void* D, const void* bias, const int64_t* orders, void* y, void* ckpt, int64_t Bt,
                    int64_t K, int64_t Dm, int64_t N, int64_t L, int flags, const int64_t* bc_stride,
                    int threads) {
  const Problem p = make_problem(u, delta, A, B, C, D, bias, orders, Bt, K, Dm, N, L, flags, bc_stride);
  switch (dtype) {
    case F32: return dispatch_fwd<float, float>(p, y, ckpt, threads);
    case BF16: return dispatch_fwd<uint16_t, float>(p, y, ckpt, threads);
    case F64: return dispatch_fwd<double, double>(p, y, ckpt, threads);
    default: return -1;
  }
}

// out: gy, ckpt (inputs), then gu, gdelta, gA, gB, gC, gD, gbias (outputs; gD/gbias may be null).
int diffmf_scan_bwd(int dtype, const void* u, const void* delta, const void* A, const void* B, const void* C,
                    const void* D, const void* bias, const int64_t* orders, void* const* out, int64_t Bt,
                    int64_t K, int64_t Dm, int64_t N, int64_t L, int flags, const int64_t* bc_stride,
                    int threads) {
  const Problem p = make_problem(u, delta, A, B, C, D, bias, orders, Bt, K, Dm, N, L, flags, bc_stride);
  switch (dtype) {
    case F32: return dispatch_bwd<float, float>(p, out, threads);
    case BF16: return dispatch_bwd<uint16_t, float>(p, out, threads);
    case F64: return dispatch_bwd<double, double>(p, out, threads);
    default: return -1;
  }
}

}  // extern "C"
