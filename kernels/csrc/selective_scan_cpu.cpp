// Selective scan (Mamba / VMamba recurrence) on the CPU: forward and backward.
//
// Plain C++17 with a C ABI and no torch headers, so it compiles in seconds; Python
// (diffmf_kernels/cpu_scan.py) loads it with ctypes and wraps it in an autograd.Function.
//
// Layout (all contiguous; "acc" is float, or double for float64 inputs):
//   u      (Bt, Dm, L) raster order when `orders` is given (shared by the K directions),
//          else (Bt, K*Dm, L)                                           input dtype
//   delta  (Bt, K*Dm, L)                                                input dtype
//   A      (K*Dm, N)                                                    acc
//   B, C   (Bt, K, N, L)                                                input dtype
//   D, bias (K*Dm) or null                                              acc
//   orders (K, L) int64 or null: direction k visits raster token orders[k, t] at step t
//   y      (Bt, K*Dm, L) raster order                                   acc
//   ckpt   (Bt, K*Dm, ceil(L/TT), N): state at the start of each TT-step chunk, or null
//
// Work split: one task per (batch, direction, group of channels). A task walks L in
// chunks of TT steps; it gathers the chunk's B and C once (in scan order, t-major so the
// state loop reads them contiguously) and runs every channel of its group over it, so
// strided raster reads of B and C are shared by the group. Inside a chunk each stage
// (exp of dt*A, the sequential recurrence, the contraction with C) is a separate loop
// over contiguous buffers that the compiler vectorises over N.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

constexpr int64_t TT = 64;  // steps per chunk (checkpoint interval of the backward pass)

// ---- element loads -------------------------------------------------------------------
inline float load(const float* p, int64_t i) { return p[i]; }
inline double load(const double* p, int64_t i) { return p[i]; }
inline float load(const uint16_t* p, int64_t i) {  // bfloat16 bits -> float
  uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// ---- math: branch-free float versions that vectorise; double uses libm ---------------
inline float exp_approx(float x) {
  // Cephes-style expf: x = k*ln2 + r, |r| <= ln2/2, degree-6 polynomial, scale by 2^k.
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float kf = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = (x - kf * 0.693359375f) + kf * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(kf) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}
inline double exp_approx(double x) { return std::exp(x); }

inline float log1p_unit(float e) {
  // log(1 + e) for e in [0, 1] as 2*atanh(e / (2 + e)); |s| <= 1/3, series to s^13.
  const float s = e / (2.0f + e);
  const float s2 = s * s;
  float p = 1.0f / 13.0f;
  p = p * s2 + 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  return 2.0f * s * p;
}

// torch.nn.functional.softplus with beta=1, threshold=20.
inline float softplus(float x) {
  const float sp = std::max(x, 0.0f) + log1p_unit(exp_approx(-std::fabs(x)));
  return x > 20.0f ? x : sp;
}
inline double softplus(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }
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
  int64_t Bt, K, Dm, N, L, groups;
  bool softplus;
};

int64_t n_chunks(int64_t L) { return (L + TT - 1) / TT; }

// Per-thread scratch for one chunk.
template <typename acc_t>
struct Chunk {
  std::vector<int64_t> idx;
  std::vector<acc_t> Bc, Cc, x, dt, u, du, a, h, gh, gy, gBc, gCc;
  explicit Chunk(int64_t N)
      : idx(TT), Bc(TT * N), Cc(TT * N), x(TT), dt(TT), u(TT), du(TT), a(TT * N), h(TT * N),
        gh(TT * N), gy(TT), gBc(TT * N), gCc(TT * N) {}
};

template <typename acc_t>
struct Grads {
  const acc_t* gy;       // (Bt, KD, L)
  const acc_t* ckpt;     // (Bt, KD, nch, N)
  acc_t* gu;             // (Bt, KD, L): per channel; the caller sums directions when u is shared
  acc_t* gdelta;         // (Bt, KD, L)
  acc_t* gA;             // (Bt, KD, N): per batch; the caller sums
  acc_t* gB;             // (groups, Bt, K, N, L): per channel group; the caller sums
  acc_t* gC;             // (groups, Bt, K, N, L)
  acc_t* gD;             // (Bt, KD) or null
  acc_t* gbias;          // (Bt, KD) or null
};

template <typename in_t, typename acc_t, int NC>
struct Scan {
  const Problem& p;
  const int64_t KD;
  explicit Scan(const Problem& prob) : p(prob), KD(prob.K * prob.Dm) {}
  // The state size, a compile-time constant in the fixed-N instantiations so loops unroll.
  int64_t nstate() const { return NC > 0 ? NC : p.N; }

  const in_t* u_row(int64_t b, int64_t k, int64_t d) const {
    const int64_t row = p.orders ? b * p.Dm + d : b * KD + k * p.Dm + d;
    return static_cast<const in_t*>(p.u) + row * p.L;
  }

  // Indices and the group-shared B, C of chunk [s, s+T) for (b, k), t-major.
  void gather(Chunk<acc_t>& w, int64_t b, int64_t k, int64_t s, int64_t T) const {
    const int64_t N = nstate();
    for (int64_t t = 0; t < T; ++t) w.idx[t] = p.orders ? p.orders[k * p.L + s + t] : s + t;
    const in_t* Bp = static_cast<const in_t*>(p.B) + (b * p.K + k) * N * p.L;
    const in_t* Cp = static_cast<const in_t*>(p.C) + (b * p.K + k) * N * p.L;
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t t = 0; t < T; ++t) {
        w.Bc[t * N + n] = load(Bp + n * p.L, w.idx[t]);
        w.Cc[t * N + n] = load(Cp + n * p.L, w.idx[t]);
      }
    }
  }

  // dt, u, dt*u and a = exp(dt*A) for one channel over the chunk; h = states after each step.
  void recompute(Chunk<acc_t>& w, int64_t b, int64_t k, int64_t d, int64_t T, const acc_t* h0) const {
    const int64_t N = nstate();
    const int64_t c = k * p.Dm + d;
    const in_t* up = u_row(b, k, d);
    const in_t* dp = static_cast<const in_t*>(p.delta) + (b * KD + c) * p.L;
    const acc_t bias = p.bias ? static_cast<const acc_t*>(p.bias)[c] : acc_t(0);
    for (int64_t t = 0; t < T; ++t) {
      w.x[t] = load(dp, w.idx[t]) + bias;
      w.u[t] = load(up, w.idx[t]);
    }
    if (p.softplus) {
      for (int64_t t = 0; t < T; ++t) w.dt[t] = softplus(w.x[t]);
    } else {
      for (int64_t t = 0; t < T; ++t) w.dt[t] = w.x[t];
    }
    for (int64_t t = 0; t < T; ++t) w.du[t] = w.dt[t] * w.u[t];
    const acc_t* Ac = static_cast<const acc_t*>(p.A) + c * N;
    for (int64_t t = 0; t < T; ++t) {
      const acc_t dtt = w.dt[t];
      acc_t* at = &w.a[t * N];
      for (int64_t n = 0; n < N; ++n) at[n] = exp_approx(dtt * Ac[n]);
    }
    const acc_t* hp = h0;
    for (int64_t t = 0; t < T; ++t) {
      const acc_t dut = w.du[t];
      const acc_t* at = &w.a[t * N];
      const acc_t* bt = &w.Bc[t * N];
      acc_t* ht = &w.h[t * N];
      for (int64_t n = 0; n < N; ++n) ht[n] = at[n] * hp[n] + dut * bt[n];
      hp = ht;
    }
  }

  void forward_task(int64_t b, int64_t k, int64_t d0, int64_t d1, acc_t* y, acc_t* ckpt) const {
    const int64_t N = nstate();
    Chunk<acc_t> w(N);
    std::vector<acc_t> state((d1 - d0) * N, acc_t(0));
    const int64_t nch = n_chunks(p.L);
    for (int64_t j = 0; j < nch; ++j) {
      const int64_t s = j * TT, T = std::min(TT, p.L - s);
      gather(w, b, k, s, T);
      for (int64_t d = d0; d < d1; ++d) {
        const int64_t c = k * p.Dm + d;
        acc_t* h = &state[(d - d0) * N];
        if (ckpt) std::copy(h, h + N, ckpt + ((b * KD + c) * nch + j) * N);
        recompute(w, b, k, d, T, h);
        const acc_t Dc = p.D ? static_cast<const acc_t*>(p.D)[c] : acc_t(0);
        acc_t* yr = y + (b * KD + c) * p.L;
        for (int64_t t = 0; t < T; ++t) {
          const acc_t* ht = &w.h[t * N];
          const acc_t* ct = &w.Cc[t * N];
          acc_t acc = 0;
#pragma omp simd reduction(+ : acc)
          for (int64_t n = 0; n < N; ++n) acc += ct[n] * ht[n];
          yr[w.idx[t]] = acc + Dc * w.u[t];
        }
        std::copy(&w.h[(T - 1) * N], &w.h[T * N], h);
      }
    }
  }


  void backward_task(const Grads<acc_t>& g, int64_t b, int64_t k, int64_t grp, int64_t d0, int64_t d1) const {
    const int64_t N = nstate();
    Chunk<acc_t> w(N);
    const int64_t nd = d1 - d0, nch = n_chunks(p.L);
    std::vector<acc_t> carry(nd * N, acc_t(0)), gA(nd * N, acc_t(0)), gD(nd, acc_t(0)), gbias(nd, acc_t(0));
    std::vector<acc_t> gdt(TT), gdu(TT);
    const acc_t* Ab = static_cast<const acc_t*>(p.A);
    for (int64_t j = nch - 1; j >= 0; --j) {
      const int64_t s = j * TT, T = std::min(TT, p.L - s);
      gather(w, b, k, s, T);
      std::fill(w.gBc.begin(), w.gBc.begin() + T * N, acc_t(0));
      std::fill(w.gCc.begin(), w.gCc.begin() + T * N, acc_t(0));
      for (int64_t d = d0; d < d1; ++d) {
        const int64_t c = k * p.Dm + d;
        const acc_t* h0 = g.ckpt + ((b * KD + c) * nch + j) * N;
        recompute(w, b, k, d, T, h0);
        const acc_t* gyr = g.gy + (b * KD + c) * p.L;
        for (int64_t t = 0; t < T; ++t) w.gy[t] = gyr[w.idx[t]];
        // Reverse recurrence: gh_t = gy_t * C_t + a_{t+1} * gh_{t+1}.
        acc_t* cr = &carry[(d - d0) * N];
        for (int64_t t = T - 1; t >= 0; --t) {
          const acc_t gyt = w.gy[t];
          const acc_t* ct = &w.Cc[t * N];
          const acc_t* at = &w.a[t * N];
          acc_t* ght = &w.gh[t * N];
          for (int64_t n = 0; n < N; ++n) {
            ght[n] = cr[n] + gyt * ct[n];
            cr[n] = at[n] * ght[n];
          }
        }
        const acc_t* Ac = Ab + c * N;
        acc_t* gAc = &gA[(d - d0) * N];
        for (int64_t t = 0; t < T; ++t) {
          const acc_t* ght = &w.gh[t * N];
          const acc_t* ht = &w.h[t * N];
          const acc_t* hp = t > 0 ? &w.h[(t - 1) * N] : h0;
          const acc_t* at = &w.a[t * N];
          const acc_t* bt = &w.Bc[t * N];
          acc_t* gbt = &w.gBc[t * N];
          acc_t* gct = &w.gCc[t * N];
          const acc_t gyt = w.gy[t], dut = w.du[t], dtt = w.dt[t];
          acc_t sdu = 0, sda = 0;
#pragma omp simd reduction(+ : sdu, sda)
          for (int64_t n = 0; n < N; ++n) {
            gct[n] += gyt * ht[n];
            gbt[n] += ght[n] * dut;
            sdu += ght[n] * bt[n];
            const acc_t gl = ght[n] * hp[n] * at[n];  // d loss / d (dt * A[n])
            sda += gl * Ac[n];
            gAc[n] += gl * dtt;
          }
          gdu[t] = sdu;
          gdt[t] = sda + sdu * w.u[t];
        }
        const acc_t Dc = p.D ? static_cast<const acc_t*>(p.D)[c] : acc_t(0);
        acc_t* gur = g.gu + (b * KD + c) * p.L;
        acc_t* gdr = g.gdelta + (b * KD + c) * p.L;
        acc_t sD = 0, sb = 0;
        for (int64_t t = 0; t < T; ++t) {
          const acc_t gx = p.softplus ? gdt[t] * softplus_grad(w.x[t]) : gdt[t];
          gur[w.idx[t]] = gdu[t] * w.dt[t] + Dc * w.gy[t];
          gdr[w.idx[t]] = gx;
          sD += w.gy[t] * w.u[t];
          sb += gx;
        }
        gD[d - d0] += sD;
        gbias[d - d0] += sb;
      }
      const int64_t base = ((grp * p.Bt + b) * p.K + k) * N * p.L;
      for (int64_t n = 0; n < N; ++n) {
        acc_t* gBr = g.gB + base + n * p.L;
        acc_t* gCr = g.gC + base + n * p.L;
        for (int64_t t = 0; t < T; ++t) {
          gBr[w.idx[t]] = w.gBc[t * N + n];
          gCr[w.idx[t]] = w.gCc[t * N + n];
        }
      }
    }
    for (int64_t d = d0; d < d1; ++d) {
      const int64_t c = k * p.Dm + d;
      std::copy(&gA[(d - d0) * N], &gA[(d - d0 + 1) * N], g.gA + (b * KD + c) * N);
      if (g.gD) g.gD[b * KD + c] = gD[d - d0];
      if (g.gbias) g.gbias[b * KD + c] = gbias[d - d0];
    }
  }
};

// Task t -> (batch, direction, channel group) and the group's channel range.
struct Split {
  int64_t b, k, grp, d0, d1;
};
Split split(const Problem& p, int64_t task) {
  const int64_t per = (p.Dm + p.groups - 1) / p.groups;
  Split s;
  s.grp = task % p.groups;
  s.k = (task / p.groups) % p.K;
  s.b = task / (p.groups * p.K);
  s.d0 = std::min(p.Dm, s.grp * per);
  s.d1 = std::min(p.Dm, s.d0 + per);
  return s;
}

template <typename in_t, typename acc_t, int NC>
void run_forward(const Problem& p, void* y, void* ckpt, int threads) {
  const Scan<in_t, acc_t, NC> scan(p);
  const int64_t tasks = p.Bt * p.K * p.groups;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t task = 0; task < tasks; ++task) {
    const Split s = split(p, task);
    if (s.d0 < s.d1) scan.forward_task(s.b, s.k, s.d0, s.d1, static_cast<acc_t*>(y), static_cast<acc_t*>(ckpt));
  }
}

template <typename in_t, typename acc_t, int NC>
void run_backward(const Problem& p, const Grads<acc_t>& g, int threads) {
  const Scan<in_t, acc_t, NC> scan(p);
  const int64_t tasks = p.Bt * p.K * p.groups;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t task = 0; task < tasks; ++task) {
    const Split s = split(p, task);
    if (s.d0 < s.d1) scan.backward_task(g, s.b, s.k, s.grp, s.d0, s.d1);
  }
}

// dtype codes shared with cpu_scan.py
enum : int { F32 = 0, BF16 = 1, F64 = 2 };

// N = 16 (the model's state size) gets a fully unrolled instantiation; other N use the
// runtime-N one. Float64 (tests only) always does, which keeps the compile short.
template <typename in_t, typename acc_t>
int dispatch_fwd(const Problem& p, void* y, void* ckpt, int threads) {
  if constexpr (sizeof(acc_t) == 4) {
    if (p.N == 16) {
      run_forward<in_t, acc_t, 16>(p, y, ckpt, threads);
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
  }
  run_backward<in_t, acc_t, 0>(p, g, threads);
  return 0;
}

Problem make_problem(const void* u, const void* delta, const void* A, const void* B, const void* C,
                     const void* D, const void* bias, const int64_t* orders, int64_t Bt, int64_t K,
                     int64_t Dm, int64_t N, int64_t L, int64_t groups, int softplus) {
  return Problem{u, delta, A, B, C, D, bias, orders, Bt, K, Dm, N, L, groups, softplus != 0};
}

}  // namespace

extern "C" {

int64_t diffmf_scan_chunk() { return TT; }

// Returns 0 on success, -1 for an unknown dtype code.
int diffmf_scan_fwd(int dtype, const void* u, const void* delta, const void* A, const void* B, const void* C,
                    const void* D, const void* bias, const int64_t* orders, void* y, void* ckpt, int64_t Bt,
                    int64_t K, int64_t Dm, int64_t N, int64_t L, int64_t groups, int softplus, int threads) {
  const Problem p = make_problem(u, delta, A, B, C, D, bias, orders, Bt, K, Dm, N, L, groups, softplus);
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
                    int64_t K, int64_t Dm, int64_t N, int64_t L, int64_t groups, int softplus, int threads) {
  const Problem p = make_problem(u, delta, A, B, C, D, bias, orders, Bt, K, Dm, N, L, groups, softplus);
  switch (dtype) {
    case F32: return dispatch_bwd<float, float>(p, out, threads);
    case BF16: return dispatch_bwd<uint16_t, float>(p, out, threads);
    case F64: return dispatch_bwd<double, double>(p, out, threads);
    default: return -1;
  }
}

}  // extern "C"
