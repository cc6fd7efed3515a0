// Hybrid CPU kernels for y = x W^T from the repacked tiered layout (lib/tiered/kernel/repack.py).
//
// x [N, I] is copied once per call into a zero-padded float buffer [n, C*B] (n <= 8 tokens at a time), so
// every stored weight is read once per 8 tokens. Work is split over block rows (tiered) or output rows
// (CSR): the torch threads (at::parallel_for) take chunks of them from a shared counter. Inner loops have compile-time trip counts (B, the token count) so that
// the compiler vectorizes them; weights are float32 or bfloat16 (raw uint16 bits), accumulation in float32.
//
// Tiered layout, per block row r (tiles of each tier in block-column order, CSR row pointers):
//   dense tiles  [Td, B, B] transposed (in-tile column major): w[j * B + i] multiplies x[j] into row i;
//   2:4 tiles    values [Tn, B/2, B] slot major (slot s of every row), in-tile column uint8 [Tn, B/2, B];
//   top-k tiles  values [Tk, k], positions [Tk, k] (row * B + column inside the tile, uint8 or int16).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kMaxTokens = 8;

inline float to_float(float v) { return v; }
inline float to_float(uint16_t bits) {  // bfloat16 -> float32
  uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &wide, sizeof(f));
  return f;
}

// Zero-padded float copy of tokens [t0, t0 + n) of x [N, I] into buf [n_pad, width] (rows n..n_pad-1 zero).
void fill_inputs(const at::Tensor& x, int64_t t0, int64_t n, int64_t n_pad, int64_t width, std::vector<float>& buf) {
  const int64_t in_features = x.size(1);
  buf.assign(n_pad * width, 0.0f);
  at::Tensor rows = x.narrow(0, t0, n).to(at::kFloat).contiguous();
  const float* src = rows.data_ptr<float>();
  for (int64_t t = 0; t < n; ++t) std::memcpy(buf.data() + t * width, src + t * in_features, in_features * sizeof(float));
}

struct Tiered {
  const int64_t* ptr;  // [3, R + 1] row pointers into the dense, 2:4, top-k tiles
  const int32_t* dense_cols;
  const int32_t* nm_cols;
  const int32_t* topk_cols;
  const void* dense;
  const void* nm_values;
  const uint8_t* nm_index;
  const void* topk_values;
  const void* topk_positions;
  int64_t n_rows, k, out_features;
};

template <int B, int N, typename W, typename P>
void tiered_block_rows(const Tiered& m, const float* xp, int64_t width, const float* bias, float* y, int64_t y_stride,
                       int64_t n_valid, int64_t r0, int64_t r1) {
  const int64_t R = m.n_rows;
  const W* dense = static_cast<const W*>(m.dense);
  const W* nm_values = static_cast<const W*>(m.nm_values);
  const W* topk_values = static_cast<const W*>(m.topk_values);
  const P* topk_positions = static_cast<const P*>(m.topk_positions);
  for (int64_t r = r0; r < r1; ++r) {
    float acc[N][B];
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < B; ++i) acc[n][i] = 0.0f;
    for (int64_t t = m.ptr[r]; t < m.ptr[r + 1]; ++t) {  // dense tiles
      const W* w = dense + t * B * B;
      const float* xs = xp + static_cast<int64_t>(m.dense_cols[t]) * B;
      for (int j = 0; j < B; ++j) {
        float wj[B];
        for (int i = 0; i < B; ++i) wj[i] = to_float(w[j * B + i]);
        for (int n = 0; n < N; ++n) {
          const float xv = xs[n * width + j];
          for (int i = 0; i < B; ++i) acc[n][i] += wj[i] * xv;
        }
      }
    }
    for (int64_t t = m.ptr[R + 1 + r]; t < m.ptr[R + 1 + r + 1]; ++t) {  // 2:4 tiles
      const W* v = nm_values + t * (B / 2) * B;
      const uint8_t* c = m.nm_index + t * (B / 2) * B;
      const float* xs = xp + static_cast<int64_t>(m.nm_cols[t]) * B;
      for (int s = 0; s < B / 2; ++s) {
        const int g = (s / 2) * 4;  // first column of the slot's group of 4
        float vs[B];
        uint8_t os[B];
        for (int i = 0; i < B; ++i) {
          vs[i] = to_float(v[s * B + i]);
          os[i] = c[s * B + i] & 3;
        }
        for (int n = 0; n < N; ++n) {
          const float* xg = xs + n * width + g;
          const float x0 = xg[0], x1 = xg[1], x2 = xg[2], x3 = xg[3];
          for (int i = 0; i < B; ++i) {
            const float xv = os[i] == 0 ? x0 : (os[i] == 1 ? x1 : (os[i] == 2 ? x2 : x3));
            acc[n][i] += vs[i] * xv;
          }
        }
      }
    }
    const int64_t k = m.k;
    for (int64_t t = m.ptr[2 * (R + 1) + r]; t < m.ptr[2 * (R + 1) + r + 1]; ++t) {  // top-k tiles
      const W* v = topk_values + t * k;
      const P* p = topk_positions + t * k;
      const float* xs = xp + static_cast<int64_t>(m.topk_cols[t]) * B;
      for (int64_t s = 0; s < k; ++s) {
        const int pos = static_cast<int>(p[s]);
        const int row = pos / B, col = pos % B;
        const float value = to_float(v[s]);
        for (int n = 0; n < N; ++n) acc[n][row] += value * xs[n * width + col];
      }
    }
    const int64_t rows = std::min<int64_t>(B, m.out_features - r * B);
    for (int64_t n = 0; n < n_valid; ++n)
      for (int64_t i = 0; i < rows; ++i) y[n * y_stride + r * B + i] = acc[n][i] + (bias ? bias[r * B + i] : 0.0f);
  }
}

#if defined(__AVX512F__)
#include <immintrin.h>
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const uint16_t* p) {  // 16 bfloat16 -> float32
  __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

// The B = 16 block rows with AVX-512: a tile row is one register; a 2:4 slot picks its inputs from the
// tile's 16 inputs with one permute (vpermps) indexed by the stored in-tile columns.
template <int N, typename W, typename P>
void tiered_block_rows_16(const Tiered& m, const float* xp, int64_t width, const float* bias, float* y, int64_t y_stride,
                          int64_t n_valid, int64_t r0, int64_t r1) {
  constexpr int B = 16;
  const int64_t R = m.n_rows, k = m.k;
  const W* dense = static_cast<const W*>(m.dense);
  const W* nm_values = static_cast<const W*>(m.nm_values);
  const W* topk_values = static_cast<const W*>(m.topk_values);
  const P* topk_positions = static_cast<const P*>(m.topk_positions);
  for (int64_t r = r0; r < r1; ++r) {
    alignas(64) float part[N][B];
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < B; ++i) part[n][i] = 0.0f;
    for (int64_t t = m.ptr[2 * (R + 1) + r]; t < m.ptr[2 * (R + 1) + r + 1]; ++t) {  // top-k tiles, scalar
      const W* v = topk_values + t * k;
      const P* p = topk_positions + t * k;
      const float* xs = xp + static_cast<int64_t>(m.topk_cols[t]) * B;
      for (int64_t s = 0; s < k; ++s) {
        const int pos = static_cast<int>(p[s]);
        const float value = to_float(v[s]);
        for (int n = 0; n < N; ++n) part[n][pos >> 4] += value * xs[n * width + (pos & 15)];
      }
    }
    __m512 acc[N];
    for (int n = 0; n < N; ++n) acc[n] = _mm512_load_ps(part[n]);
    for (int64_t t = m.ptr[r]; t < m.ptr[r + 1]; ++t) {  // dense tiles
      const W* w = dense + t * B * B;
      const float* xs = xp + static_cast<int64_t>(m.dense_cols[t]) * B;
      _mm_prefetch(reinterpret_cast<const char*>(w + 4 * B * B), _MM_HINT_T0);
      for (int j = 0; j < B; ++j) {
        const __m512 wj = load16(w + j * B);
        for (int n = 0; n < N; ++n) acc[n] = _mm512_fmadd_ps(wj, _mm512_set1_ps(xs[n * width + j]), acc[n]);
      }
    }
    for (int64_t t = m.ptr[R + 1 + r]; t < m.ptr[R + 1 + r + 1]; ++t) {  // 2:4 tiles
      const W* v = nm_values + t * (B / 2) * B;
      const uint8_t* c = m.nm_index + t * (B / 2) * B;
      const float* xs = xp + static_cast<int64_t>(m.nm_cols[t]) * B;
      __m512 xt[N];
      for (int n = 0; n < N; ++n) xt[n] = _mm512_loadu_ps(xs + n * width);
      for (int s = 0; s < B / 2; ++s) {
        const __m512 vs = load16(v + s * B);
        const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + s * B)));
        for (int n = 0; n < N; ++n) acc[n] = _mm512_fmadd_ps(vs, _mm512_permutexvar_ps(idx, xt[n]), acc[n]);
      }
    }
    const int64_t rows = std::min<int64_t>(B, m.out_features - r * B);
    for (int n = 0; n < N; ++n) _mm512_store_ps(part[n], acc[n]);
    for (int64_t n = 0; n < n_valid; ++n)
      for (int64_t i = 0; i < rows; ++i) y[n * y_stride + r * B + i] = part[n][i] + (bias ? bias[r * B + i] : 0.0f);
  }
}
inline __m512i load_index16(const int16_t* p) {
  return _mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline __m512i load_index16(const int32_t* p) { return _mm512_loadu_si512(p); }
#define HYBRID_HAVE_AVX512 1
#endif

template <int B, typename W, typename P>
void tiered_dispatch_tokens(int64_t n_pad, const Tiered& m, const float* xp, int64_t width, const float* bias, float* y,
                            int64_t y_stride, int64_t n_valid, int64_t r0, int64_t r1) {
#ifdef HYBRID_HAVE_AVX512
  if constexpr (B == 16) {
    switch (n_pad) {
      case 1: return tiered_block_rows_16<1, W, P>(m, xp, width, bias, y, y_stride, n_valid, r0, r1);
      case 2: return tiered_block_rows_16<2, W, P>(m, xp, width, bias, y, y_stride, n_valid, r0, r1);
      case 4: return tiered_block_rows_16<4, W, P>(m, xp, width, bias, y, y_stride, n_valid, r0, r1);
      default: return tiered_block_rows_16<8, W, P>(m, xp, width, bias, y, y_stride, n_valid, r0, r1);
    }
  }
#endif
  switch (n_pad) {
    case 1: return tiered_block_rows<B, 1, W, P>(m, xp, width, bias, y, y_stride, n_valid, r0, r1);
    case 2: return tiered_block_rows<B, 2, W, P>(m, xp, width, bias, y, y_stride, n_valid, r0, r1);
    case 4: return tiered_block_rows<B, 4, W, P>(m, xp, width, bias, y, y_stride, n_valid, r0, r1);
    default: return tiered_block_rows<B, 8, W, P>(m, xp, width, bias, y, y_stride, n_valid, r0, r1);
  }
}

int64_t padded_tokens(int64_t n) { return n <= 1 ? 1 : n <= 2 ? 2 : n <= 4 ? 4 : 8; }

// f(begin, end) over [0, n) in chunks of `chunk`, which the torch threads take in turn from a shared counter:
// a thread that the OS delays (a busy core) takes fewer chunks instead of holding up a static half.
template <typename F>
void dynamic_for(int64_t n, int64_t chunk, const F& f) {
  std::atomic<int64_t> next{0};
  const int64_t n_chunks = (n + chunk - 1) / chunk;
  at::parallel_for(0, std::min<int64_t>(at::get_num_threads(), n_chunks), 1, [&](int64_t, int64_t) {
    for (int64_t start = next.fetch_add(chunk); start < n; start = next.fetch_add(chunk)) f(start, std::min(n, start + chunk));
  });
}

const float* bias_ptr(const c10::optional<at::Tensor>& bias, at::Tensor& holder) {
  if (!bias.has_value()) return nullptr;
  holder = bias->to(at::kFloat).contiguous();
  return holder.data_ptr<float>();
}

template <int B, typename W, typename P>
void tiered_run(const Tiered& m, const at::Tensor& x, const float* bias, at::Tensor& y) {
  const int64_t width = x.size(1) == 0 ? 0 : ((x.size(1) + B - 1) / B) * B;
  const int64_t n_tokens = x.size(0), out_features = m.out_features;
  float* yp = y.data_ptr<float>();
  std::vector<float> buf;
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kMaxTokens) {
    const int64_t n = std::min(kMaxTokens, n_tokens - t0), n_pad = padded_tokens(n);
    fill_inputs(x, t0, n, n_pad, std::max<int64_t>(width, 1), buf);
    const float* xp = buf.data();
    float* yc = yp + t0 * out_features;
    dynamic_for(m.n_rows, 4, [&](int64_t r0, int64_t r1) {
      tiered_dispatch_tokens<B, W, P>(n_pad, m, xp, std::max<int64_t>(width, 1), bias, yc, out_features, n, r0, r1);
    });
  }
}

}  // namespace

// y [N, O] float32 = x [N, I] W^T (+ bias) from the repacked tiered layout; B = block size (8, 16 or 32).
at::Tensor tiered_linear(const at::Tensor& x, int64_t out_features, int64_t block_size, const at::Tensor& ptr,
                         const at::Tensor& dense_cols, const at::Tensor& dense, const at::Tensor& nm_cols,
                         const at::Tensor& nm_values, const at::Tensor& nm_index, const at::Tensor& topk_cols,
                         const at::Tensor& topk_values, const at::Tensor& topk_positions,
                         const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 2, "x must be [N, I]");
  Tiered m{ptr.data_ptr<int64_t>(), dense_cols.data_ptr<int32_t>(), nm_cols.data_ptr<int32_t>(),
           topk_cols.data_ptr<int32_t>(), dense.data_ptr(), nm_values.data_ptr(), nm_index.data_ptr<uint8_t>(),
           topk_values.data_ptr(), topk_positions.data_ptr(), ptr.size(1) - 1,
           topk_values.dim() == 2 ? topk_values.size(1) : 0, out_features};
  at::Tensor y = at::empty({x.size(0), out_features}, x.options().dtype(at::kFloat));
  at::Tensor bias_holder;
  const float* b = bias_ptr(bias, bias_holder);
  const bool bf16 = dense.scalar_type() == at::kBFloat16;
  TORCH_CHECK(bf16 || dense.scalar_type() == at::kFloat, "weights must be float32 or bfloat16");
  const bool wide = topk_positions.scalar_type() == at::kShort;
#define TIERED_CASE(BS)                                                              \
  case BS:                                                                           \
    if (bf16 && wide) tiered_run<BS, uint16_t, int16_t>(m, x, b, y);                 \
    else if (bf16) tiered_run<BS, uint16_t, uint8_t>(m, x, b, y);                    \
    else if (wide) tiered_run<BS, float, int16_t>(m, x, b, y);                       \
    else tiered_run<BS, float, uint8_t>(m, x, b, y);                                 \
    break;
  switch (block_size) {
    TIERED_CASE(8)
    TIERED_CASE(16)
    TIERED_CASE(32)
    default: TORCH_CHECK(false, "block size ", block_size, " has no compiled kernel (8, 16, 32)");
  }
#undef TIERED_CASE
  return y;
}

namespace {

template <int N, typename W, typename I>
void csr_rows(const int64_t* row_ptr, const I* cols, const W* values, const float* xp, int64_t width, const float* bias,
              float* y, int64_t y_stride, int64_t n_valid, int64_t o0, int64_t o1) {
  for (int64_t o = o0; o < o1; ++o) {
    float acc[N];
    for (int n = 0; n < N; ++n) acc[n] = 0.0f;
    int64_t e = row_ptr[o];
#ifdef HYBRID_HAVE_AVX512
    {  // 16 stored values at a time: their inputs gathered from the token rows (in cache)
      __m512 vacc[N];
      for (int n = 0; n < N; ++n) vacc[n] = _mm512_setzero_ps();
      for (; e + 16 <= row_ptr[o + 1]; e += 16) {
        const __m512 v = load16(values + e);
        const __m512i idx = load_index16(cols + e);
        for (int n = 0; n < N; ++n) vacc[n] = _mm512_fmadd_ps(v, _mm512_i32gather_ps(idx, xp + n * width, 4), vacc[n]);
      }
      for (int n = 0; n < N; ++n) acc[n] = _mm512_reduce_add_ps(vacc[n]);
    }
#endif
    for (; e < row_ptr[o + 1]; ++e) {
      const float v = to_float(values[e]);
      const int64_t c = static_cast<int64_t>(cols[e]);
      for (int n = 0; n < N; ++n) acc[n] += v * xp[n * width + c];
    }
    for (int64_t n = 0; n < n_valid; ++n) y[n * y_stride + o] = acc[n] + (bias ? bias[o] : 0.0f);
  }
}

template <typename W, typename I>
void csr_run(const int64_t* row_ptr, const I* cols, const W* values, const at::Tensor& x, const float* bias, at::Tensor& y) {
  const int64_t n_tokens = x.size(0), width = std::max<int64_t>(x.size(1), 1), out_features = y.size(1);
  float* yp = y.data_ptr<float>();
  std::vector<float> buf;
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kMaxTokens) {
    const int64_t n = std::min(kMaxTokens, n_tokens - t0), n_pad = padded_tokens(n);
    fill_inputs(x, t0, n, n_pad, width, buf);
    const float* xp = buf.data();
    float* yc = yp + t0 * out_features;
    dynamic_for(out_features, 64, [&](int64_t o0, int64_t o1) {
      switch (n_pad) {
        case 1: return csr_rows<1, W, I>(row_ptr, cols, values, xp, width, bias, yc, out_features, n, o0, o1);
        case 2: return csr_rows<2, W, I>(row_ptr, cols, values, xp, width, bias, yc, out_features, n, o0, o1);
        case 4: return csr_rows<4, W, I>(row_ptr, cols, values, xp, width, bias, yc, out_features, n, o0, o1);
        default: return csr_rows<8, W, I>(row_ptr, cols, values, xp, width, bias, yc, out_features, n, o0, o1);
      }
    });
  }
}

}  // namespace

// y [N, O] float32 = x [N, I] W^T (+ bias) for W in CSR: row_ptr int64 [O + 1], cols int16/int32 [nnz], values [nnz].
at::Tensor csr_linear(const at::Tensor& x, const at::Tensor& row_ptr, const at::Tensor& cols, const at::Tensor& values,
                      const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 2, "x must be [N, I]");
  const int64_t out_features = row_ptr.size(0) - 1;
  at::Tensor y = at::empty({x.size(0), out_features}, x.options().dtype(at::kFloat));
  at::Tensor bias_holder;
  const float* b = bias_ptr(bias, bias_holder);
  const int64_t* rp = row_ptr.data_ptr<int64_t>();
  const bool bf16 = values.scalar_type() == at::kBFloat16;
  TORCH_CHECK(bf16 || values.scalar_type() == at::kFloat, "weights must be float32 or bfloat16");
  if (cols.scalar_type() == at::kShort) {
    const int16_t* c = cols.data_ptr<int16_t>();
    if (bf16) csr_run(rp, c, static_cast<const uint16_t*>(values.data_ptr()), x, b, y);
    else csr_run(rp, c, values.data_ptr<float>(), x, b, y);
  } else {
    const int32_t* c = cols.data_ptr<int32_t>();
    if (bf16) csr_run(rp, c, static_cast<const uint16_t*>(values.data_ptr()), x, b, y);
    else csr_run(rp, c, values.data_ptr<float>(), x, b, y);
  }
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("tiered_linear", &tiered_linear, "y = x W^T from the repacked tiered layout (float32 result)");
  m.def("csr_linear", &csr_linear, "y = x W^T from a CSR matrix (float32 result)");
}
