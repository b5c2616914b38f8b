/*
 * Fused exhaustive MaxSim kernel: M[i, t] = max_j q_t . d_ij for documents stored packed.
 *
 * One pass over the document tokens, no [Q, total_tokens] similarity matrix: a register block
 * of document tokens x query tokens is accumulated in fp32 over the dimension and folded into a
 * running per-(document, query token) maximum. Storage may be fp32, fp16, bf16 or int8 with a
 * per-row fp32 scale; non-fp32 documents are widened to fp32 one document at a time.
 *
 * x86-64 CPUs with AVX2+FMA get an intrinsics kernel (chosen at run time, the module itself is
 * built for the baseline ISA); other CPUs get a portable loop the compiler vectorises. The
 * Python caller splits the documents between threads; the kernels release the GIL.
 *
 * Two entry points: max_matrix scores packed documents (one matrix + offsets, validated by the
 * caller); max_matrix_ptrs scores documents that stay where they lie (a list of arrays, read in
 * place through a table of pointers, lengths and dtype codes that scan_docs fills from a Python
 * list without copying a single vector). The pointer kernel checks finiteness as it goes: a
 * NaN/inf in a document makes every dot product with it non-finite, so each document kernel
 * folds `dot * 0` into a flag (a few instructions per block of tokens); a flagged document's
 * values are then checked exactly (a huge finite value whose products overflow is no error).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define VR_X86 1
#include <immintrin.h>
#else
#define VR_X86 0
#endif

enum { KIND_F32 = 0, KIND_F16 = 1, KIND_BF16 = 2, KIND_I8 = 3 };

/* ---- storage -> fp32 ------------------------------------------------------------------ */

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while ((man & 0x400u) == 0) {
                man <<= 1;
                exp--;
            }
            man &= 0x3ffu;
            bits = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

#if VR_X86
/* fp16 -> fp32 with F16C, 8 values per instruction. */
__attribute__((target("avx,f16c"))) static void half_to_float_f16c(const uint16_t *src,
                                                                    int64_t count, float *dst) {
    int64_t x = 0;
    for (; x + 8 <= count; x += 8)
        _mm256_storeu_ps(dst + x, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + x))));
    for (; x < count; x++) dst[x] = half_to_float(src[x]);
}

/* CPU features, read once: bit 0 = AVX2+FMA (the kernel), bit 1 = AVX+F16C (fp16 widening). */
enum { CPU_AVX2_FMA = 1, CPU_F16C = 2 };
static int cpu_features(void) {
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = ((__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? CPU_AVX2_FMA : 0) |
                 ((__builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c")) ? CPU_F16C : 0);
    }
    return cached;
}
#endif

static void widen_rows(int kind, const void *vec, const float *scales, int64_t row0, int64_t rows,
                       int d, float *dst) {
    int64_t count = rows * (int64_t)d;
#if VR_X86
    if (kind == KIND_F16 && (cpu_features() & CPU_F16C)) {
        half_to_float_f16c((const uint16_t *)vec + row0 * d, count, dst);
        return;
    }
#endif
    if (kind == KIND_F16) {
        const uint16_t *src = (const uint16_t *)vec + row0 * d;
        for (int64_t x = 0; x < count; x++) dst[x] = half_to_float(src[x]);
    } else if (kind == KIND_BF16) {
        const uint16_t *src = (const uint16_t *)vec + row0 * d;
        for (int64_t x = 0; x < count; x++) {
            uint32_t bits = (uint32_t)src[x] << 16;
            memcpy(&dst[x], &bits, sizeof bits);
        }
    } else { /* KIND_I8 */
        const int8_t *src = (const int8_t *)vec + row0 * d;
        for (int64_t r = 0; r < rows; r++) {
            float s = scales[row0 + r];
            for (int k = 0; k < d; k++) dst[r * d + k] = s * (float)src[r * d + k];
        }
    }
}

/* ---- portable kernel ------------------------------------------------------------------ */

/* One document (rows [0, len) of `doc`) against all Qp query columns of qT [d, Qp]. Returns
 * nonzero when some dot product was not finite (the document may hold a NaN/inf). */
static int doc_portable(const float *qT, int d, int Qp, const float *doc, int64_t len,
                        float *out) {
    float acc[32];
    float chk = 0.0f;
    for (int qb = 0; qb < Qp; qb += 32) {
        int w = Qp - qb < 32 ? Qp - qb : 32;
        float *best = out + qb;
        for (int t = 0; t < w; t++) best[t] = -INFINITY;
        for (int64_t j = 0; j < len; j++) {
            const float *v = doc + j * d;
            for (int t = 0; t < w; t++) acc[t] = 0.0f;
            for (int k = 0; k < d; k++) {
                const float x = v[k];
                const float *row = qT + (int64_t)k * Qp + qb;
                for (int t = 0; t < w; t++) acc[t] += x * row[t];
            }
            for (int t = 0; t < w; t++) best[t] = acc[t] > best[t] ? acc[t] : best[t];
            chk += acc[0] * 0.0f; /* NaN from here on iff some dot product was NaN/inf */
        }
    }
    return chk != chk;
}

/* ---- AVX2 + FMA kernel ---------------------------------------------------------------- */

#if VR_X86
#define VR_AVX2 __attribute__((target("avx2,fma")))

/* 32 query columns (4 ymm) x 3 document tokens per step: 12 accumulators. */
VR_AVX2 static int block32(const float *qT, int d, int Qp, int qb, const float *doc, int64_t len,
                           float *out) {
    const __m256 zero = _mm256_setzero_ps();
    __m256 b0 = _mm256_set1_ps(-INFINITY), b1 = b0, b2 = b0, b3 = b0, chk = zero;
    int64_t j = 0;
    for (; j + 3 <= len; j += 3) {
        __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
        __m256 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
        __m256 a20 = a00, a21 = a00, a22 = a00, a23 = a00;
        const float *v0 = doc + j * d, *v1 = v0 + d, *v2 = v1 + d;
        const float *w = qT + qb;
        for (int k = 0; k < d; k++, w += Qp) {
            __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + 8);
            __m256 w2 = _mm256_loadu_ps(w + 16), w3 = _mm256_loadu_ps(w + 24);
            __m256 x = _mm256_broadcast_ss(v0 + k);
            a00 = _mm256_fmadd_ps(x, w0, a00);
            a01 = _mm256_fmadd_ps(x, w1, a01);
            a02 = _mm256_fmadd_ps(x, w2, a02);
            a03 = _mm256_fmadd_ps(x, w3, a03);
            x = _mm256_broadcast_ss(v1 + k);
            a10 = _mm256_fmadd_ps(x, w0, a10);
            a11 = _mm256_fmadd_ps(x, w1, a11);
            a12 = _mm256_fmadd_ps(x, w2, a12);
            a13 = _mm256_fmadd_ps(x, w3, a13);
            x = _mm256_broadcast_ss(v2 + k);
            a20 = _mm256_fmadd_ps(x, w0, a20);
            a21 = _mm256_fmadd_ps(x, w1, a21);
            a22 = _mm256_fmadd_ps(x, w2, a22);
            a23 = _mm256_fmadd_ps(x, w3, a23);
        }
        b0 = _mm256_max_ps(b0, _mm256_max_ps(a00, _mm256_max_ps(a10, a20)));
        b1 = _mm256_max_ps(b1, _mm256_max_ps(a01, _mm256_max_ps(a11, a21)));
        b2 = _mm256_max_ps(b2, _mm256_max_ps(a02, _mm256_max_ps(a12, a22)));
        b3 = _mm256_max_ps(b3, _mm256_max_ps(a03, _mm256_max_ps(a13, a23)));
        chk = _mm256_add_ps(chk, _mm256_mul_ps(_mm256_add_ps(a00, _mm256_add_ps(a10, a20)), zero));
    }
    for (; j < len; j++) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        const float *v = doc + j * d;
        const float *w = qT + qb;
        for (int k = 0; k < d; k++, w += Qp) {
            __m256 x = _mm256_broadcast_ss(v + k);
            a0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(w), a0);
            a1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(w + 8), a1);
            a2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(w + 16), a2);
            a3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(w + 24), a3);
        }
        b0 = _mm256_max_ps(b0, a0);
        b1 = _mm256_max_ps(b1, a1);
        b2 = _mm256_max_ps(b2, a2);
        b3 = _mm256_max_ps(b3, a3);
        chk = _mm256_add_ps(chk, _mm256_mul_ps(a0, zero));
    }
    float *o = out + qb;
    _mm256_storeu_ps(o, b0);
    _mm256_storeu_ps(o + 8, b1);
    _mm256_storeu_ps(o + 16, b2);
    _mm256_storeu_ps(o + 24, b3);
    return _mm256_movemask_ps(_mm256_cmp_ps(chk, chk, _CMP_UNORD_Q));
}

/* 8 query columns (1 ymm) x 4 document tokens per step: the tail when Qp % 32 != 0. */
VR_AVX2 static int block8(const float *qT, int d, int Qp, int qb, const float *doc, int64_t len,
                          float *out) {
    const __m256 zero = _mm256_setzero_ps();
    __m256 best = _mm256_set1_ps(-INFINITY), chk = zero;
    int64_t j = 0;
    for (; j + 4 <= len; j += 4) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        const float *v0 = doc + j * d, *v1 = v0 + d, *v2 = v1 + d, *v3 = v2 + d;
        const float *w = qT + qb;
        for (int k = 0; k < d; k++, w += Qp) {
            __m256 w0 = _mm256_loadu_ps(w);
            a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(v0 + k), w0, a0);
            a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(v1 + k), w0, a1);
            a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(v2 + k), w0, a2);
            a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(v3 + k), w0, a3);
        }
        best = _mm256_max_ps(best, _mm256_max_ps(_mm256_max_ps(a0, a1), _mm256_max_ps(a2, a3)));
        chk = _mm256_add_ps(
            chk, _mm256_mul_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)), zero));
    }
    for (; j < len; j++) {
        __m256 a0 = _mm256_setzero_ps();
        const float *v = doc + j * d;
        const float *w = qT + qb;
        for (int k = 0; k < d; k++, w += Qp)
            a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(v + k), _mm256_loadu_ps(w), a0);
        best = _mm256_max_ps(best, a0);
        chk = _mm256_add_ps(chk, _mm256_mul_ps(a0, zero));
    }
    _mm256_storeu_ps(out + qb, best);
    return _mm256_movemask_ps(_mm256_cmp_ps(chk, chk, _CMP_UNORD_Q));
}

VR_AVX2 static int doc_avx2(const float *qT, int d, int Qp, const float *doc, int64_t len,
                            float *out) {
    int qb = 0, flag = 0;
    for (; qb + 32 <= Qp; qb += 32) flag |= block32(qT, d, Qp, qb, doc, len, out);
    for (; qb < Qp; qb += 8) flag |= block8(qT, d, Qp, qb, doc, len, out);
    return flag;
}
#endif

/* Scores one document into `out`; nonzero when some dot product was not finite. */
typedef int (*doc_fn)(const float *, int, int, const float *, int64_t, float *);

/* Exact check of a flagged document: every value finite? */
static int all_finite(const float *x, int64_t count) {
    for (int64_t i = 0; i < count; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static doc_fn pick(int allow_simd) {
#if VR_X86
    if (allow_simd && (cpu_features() & CPU_AVX2_FMA)) return doc_avx2;
#else
    (void)allow_simd;
#endif
    return doc_portable;
}

/* ---- Python binding ------------------------------------------------------------------- */

static int get_buffer(PyObject *obj, Py_buffer *view, int writable, const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous%s buffer", what,
                     writable ? " writable" : "");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(max_matrix_doc,
             "max_matrix(qT, d, Qp, vec, kind, scales, offsets, lo, hi, out, simd=True)\n\n"
             "out[(i - lo) * Qp + t] = max_j qT[:, t] . vec[offsets[i] + j] for documents i in "
             "[lo, hi); -inf for a zero-token document. qT is fp32 [d, Qp] (Qp % 8 == 0), vec "
             "is [total, d] in `kind` (0 fp32, 1 fp16, 2 bf16 bits, 3 int8 with fp32 scales), "
             "offsets int64 [n + 1]. Arguments are trusted: the caller validates them.");

static PyObject *max_matrix(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *q_obj, *vec_obj, *scales_obj, *off_obj, *out_obj;
    int d, Qp, kind, simd = 1;
    Py_ssize_t lo, hi;
    if (!PyArg_ParseTuple(args, "OiiOiOOnnO|p", &q_obj, &d, &Qp, &vec_obj, &kind, &scales_obj,
                          &off_obj, &lo, &hi, &out_obj, &simd))
        return NULL;
    if (d <= 0 || Qp <= 0 || Qp % 8 != 0 || kind < KIND_F32 || kind > KIND_I8 || lo < 0 ||
        hi < lo) {
        PyErr_SetString(PyExc_ValueError, "max_matrix: invalid sizes or kind");
        return NULL;
    }
    Py_buffer q = {0}, vec = {0}, sc = {0}, off = {0}, out = {0};
    int have_sc = 0;
    PyObject *result = NULL;
    if (get_buffer(q_obj, &q, 0, "qT") || get_buffer(vec_obj, &vec, 0, "vec") ||
        get_buffer(off_obj, &off, 0, "offsets") || get_buffer(out_obj, &out, 1, "out"))
        goto done;
    if (scales_obj != Py_None) {
        if (get_buffer(scales_obj, &sc, 0, "scales")) goto done;
        have_sc = 1;
    }
    const Py_ssize_t item = kind == KIND_F32 ? 4 : (kind == KIND_I8 ? 1 : 2);
    const int64_t *offsets = (const int64_t *)off.buf;
    const Py_ssize_t n_off = off.len / (Py_ssize_t)sizeof(int64_t);
    if (q.len < (Py_ssize_t)d * Qp * 4 || hi + 1 > n_off ||
        out.len < (Py_ssize_t)(hi - lo) * Qp * 4 || (kind == KIND_I8 && !have_sc)) {
        PyErr_SetString(PyExc_ValueError, "max_matrix: buffer too small or scales missing");
        goto done;
    }
    if (hi > lo && (offsets[lo] < 0 || vec.len < (Py_ssize_t)offsets[hi] * d * item ||
                    (have_sc && sc.len < (Py_ssize_t)offsets[hi] * 4))) {
        PyErr_SetString(PyExc_ValueError, "max_matrix: offsets exceed the vectors");
        goto done;
    }
    int64_t maxlen = 0;
    for (Py_ssize_t i = lo; i < hi; i++) {
        int64_t len = offsets[i + 1] - offsets[i];
        if (len < 0) {
            PyErr_SetString(PyExc_ValueError, "max_matrix: offsets must be non-decreasing");
            goto done;
        }
        if (len > maxlen) maxlen = len;
    }
    float *tmp = NULL;
    if (kind != KIND_F32 && maxlen > 0) {
        tmp = (float *)malloc((size_t)maxlen * (size_t)d * sizeof(float));
        if (tmp == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    const doc_fn fn = pick(simd);
    const float *qT = (const float *)q.buf;
    float *o = (float *)out.buf;
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t i = lo; i < hi; i++) {
        const int64_t s = offsets[i], len = offsets[i + 1] - s;
        float *row = o + (i - lo) * (Py_ssize_t)Qp;
        if (len == 0) {
            for (int t = 0; t < Qp; t++) row[t] = -INFINITY;
            continue;
        }
        const float *doc;
        if (kind == KIND_F32) {
            doc = (const float *)vec.buf + s * d;
        } else {
            widen_rows(kind, vec.buf, have_sc ? (const float *)sc.buf : NULL, s, len, d, tmp);
            doc = tmp;
        }
        (void)fn(qT, d, Qp, doc, len, row); /* validated by PackedDocs */
    }
    Py_END_ALLOW_THREADS;
    free(tmp);
    Py_INCREF(Py_None);
    result = Py_None;
done:
    if (q.obj) PyBuffer_Release(&q);
    if (vec.obj) PyBuffer_Release(&vec);
    if (off.obj) PyBuffer_Release(&off);
    if (out.obj) PyBuffer_Release(&out);
    if (have_sc) PyBuffer_Release(&sc);
    return result;
}

/* ---- documents read in place: a table of pointers ------------------------------------ */

PyDoc_STRVAR(scan_docs_doc,
             "scan_docs(docs, d, ndarray, ptrs, lens, kinds) -> int\n\n"
             "For each entry of the sequence `docs` that is an `ndarray` instance holding a 2-D "
             "[T, d] float32 or float16 (native byte order) array with contiguous rows, write "
             "its data address, T and dtype code (0 fp32, 1 fp16) to ptrs/lens/kinds (int64, "
             "int64, int8 buffers of len(docs) entries); every other entry gets kind -1 (the "
             "caller converts or rejects it). Returns the number of kind -1 entries. Nothing is "
             "copied: the addresses are valid while the caller holds the arrays.");

static PyObject *scan_docs(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *docs_obj, *nd_type, *ptrs_obj, *lens_obj, *kinds_obj;
    int d;
    if (!PyArg_ParseTuple(args, "OiOOOO", &docs_obj, &d, &nd_type, &ptrs_obj, &lens_obj,
                          &kinds_obj))
        return NULL;
    if (!PyType_Check(nd_type)) {
        PyErr_SetString(PyExc_TypeError, "scan_docs: ndarray must be a type");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(docs_obj, "scan_docs: docs must be a sequence");
    if (seq == NULL) return NULL;
    Py_buffer pb = {0}, lb = {0}, kb = {0};
    PyObject *result = NULL;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (get_buffer(ptrs_obj, &pb, 1, "ptrs") || get_buffer(lens_obj, &lb, 1, "lens") ||
        get_buffer(kinds_obj, &kb, 1, "kinds"))
        goto done;
    if (pb.len < n * 8 || lb.len < n * 8 || kb.len < n) {
        PyErr_SetString(PyExc_ValueError, "scan_docs: output buffers too small");
        goto done;
    }
    int64_t *ptrs = (int64_t *)pb.buf, *lens = (int64_t *)lb.buf;
    int8_t *kinds = (int8_t *)kb.buf;
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Py_ssize_t left = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *obj = items[i];
        Py_buffer v;
        int kind = -1;
        Py_INCREF(obj);
        ptrs[i] = 0;
        lens[i] = 0;
        if (PyObject_TypeCheck(obj, (PyTypeObject *)nd_type) &&
            PyObject_GetBuffer(obj, &v, PyBUF_RECORDS_RO) == 0) {
            const char *f = v.format;
            if (v.ndim == 2 && v.shape[1] == d && f != NULL && f[0] != '\0' && f[1] == '\0') {
                if (f[0] == 'f' && v.itemsize == 4) kind = KIND_F32;
                if (f[0] == 'e' && v.itemsize == 2) kind = KIND_F16;
            }
            if (kind >= 0 && v.shape[0] > 0 &&
                ((d > 1 && v.strides[1] != v.itemsize) ||
                 (v.shape[0] > 1 && v.strides[0] != (Py_ssize_t)d * v.itemsize)))
                kind = -1; /* rows not contiguous: the caller copies this one */
            if (kind >= 0) {
                ptrs[i] = (int64_t)(intptr_t)v.buf;
                lens[i] = (int64_t)v.shape[0];
            }
            PyBuffer_Release(&v);
        } else if (PyErr_Occurred()) {
            PyErr_Clear();
        }
        Py_DECREF(obj);
        kinds[i] = (int8_t)kind;
        if (kind < 0) left++;
    }
    result = PyLong_FromSsize_t(left);
done:
    if (pb.obj) PyBuffer_Release(&pb);
    if (lb.obj) PyBuffer_Release(&lb);
    if (kb.obj) PyBuffer_Release(&kb);
    Py_DECREF(seq);
    return result;
}

PyDoc_STRVAR(max_matrix_ptrs_doc,
             "max_matrix_ptrs(qT, d, Qp, ptrs, lens, kinds, lo, hi, out, simd=True) -> int\n\n"
             "out[(i - lo) * Qp + t] = max_j qT[:, t] . doc_i[j] for documents i in [lo, hi), "
             "where doc_i is lens[i] contiguous rows of d values at address ptrs[i] in dtype "
             "kinds[i] (0 fp32, 1 fp16, 2 bf16 bits); -inf for a zero-token document. Returns "
             "-1, or the first document in [lo, hi) that holds a NaN or inf (scoring stops "
             "there). The addresses are trusted: the caller holds the arrays.");

static PyObject *max_matrix_ptrs(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *q_obj, *p_obj, *l_obj, *k_obj, *out_obj;
    int d, Qp, simd = 1;
    Py_ssize_t lo, hi;
    if (!PyArg_ParseTuple(args, "OiiOOOnnO|p", &q_obj, &d, &Qp, &p_obj, &l_obj, &k_obj, &lo,
                          &hi, &out_obj, &simd))
        return NULL;
    if (d <= 0 || Qp <= 0 || Qp % 8 != 0 || lo < 0 || hi < lo) {
        PyErr_SetString(PyExc_ValueError, "max_matrix_ptrs: invalid sizes");
        return NULL;
    }
    Py_buffer q = {0}, pb = {0}, lb = {0}, kb = {0}, out = {0};
    PyObject *result = NULL;
    float *tmp = NULL;
    if (get_buffer(q_obj, &q, 0, "qT") || get_buffer(p_obj, &pb, 0, "ptrs") ||
        get_buffer(l_obj, &lb, 0, "lens") || get_buffer(k_obj, &kb, 0, "kinds") ||
        get_buffer(out_obj, &out, 1, "out"))
        goto done;
    if (q.len < (Py_ssize_t)d * Qp * 4 || pb.len < hi * 8 || lb.len < hi * 8 || kb.len < hi ||
        out.len < (Py_ssize_t)(hi - lo) * Qp * 4) {
        PyErr_SetString(PyExc_ValueError, "max_matrix_ptrs: buffer too small");
        goto done;
    }
    const int64_t *ptrs = (const int64_t *)pb.buf, *lens = (const int64_t *)lb.buf;
    const int8_t *kinds = (const int8_t *)kb.buf;
    int64_t maxwide = 0;
    for (Py_ssize_t i = lo; i < hi; i++) {
        if (lens[i] < 0 || kinds[i] < KIND_F32 || kinds[i] > KIND_BF16 ||
            (lens[i] > 0 && ptrs[i] == 0)) {
            PyErr_SetString(PyExc_ValueError, "max_matrix_ptrs: invalid document entry");
            goto done;
        }
        if (kinds[i] != KIND_F32 && lens[i] > maxwide) maxwide = lens[i];
    }
    if (maxwide > 0) {
        tmp = (float *)malloc((size_t)maxwide * (size_t)d * sizeof(float));
        if (tmp == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    const doc_fn fn = pick(simd);
    const float *qT = (const float *)q.buf;
    float *o = (float *)out.buf;
    Py_ssize_t bad = -1;
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t i = lo; i < hi; i++) {
        const int64_t len = lens[i];
        float *row = o + (i - lo) * (Py_ssize_t)Qp;
        if (len == 0) {
            for (int t = 0; t < Qp; t++) row[t] = -INFINITY;
            continue;
        }
        const void *src = (const void *)(intptr_t)ptrs[i];
        const float *doc = (const float *)src;
        if (kinds[i] != KIND_F32) {
            widen_rows(kinds[i], src, NULL, 0, len, d, tmp);
            doc = tmp;
        }
        if (fn(qT, d, Qp, doc, len, row) && !all_finite(doc, len * (int64_t)d)) {
            bad = i;
            break;
        }
    }
    Py_END_ALLOW_THREADS;
    result = PyLong_FromSsize_t(bad);
done:
    free(tmp);
    if (q.obj) PyBuffer_Release(&q);
    if (pb.obj) PyBuffer_Release(&pb);
    if (lb.obj) PyBuffer_Release(&lb);
    if (kb.obj) PyBuffer_Release(&kb);
    if (out.obj) PyBuffer_Release(&out);
    return result;
}

static PyObject *simd_name(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
#if VR_X86
    if ((cpu_features() & CPU_AVX2_FMA)) return PyUnicode_FromString("avx2+fma");
#endif
    return PyUnicode_FromString("portable");
}

static PyMethodDef methods[] = {
    {"max_matrix", max_matrix, METH_VARARGS, max_matrix_doc},
    {"max_matrix_ptrs", max_matrix_ptrs, METH_VARARGS, max_matrix_ptrs_doc},
    {"scan_docs", scan_docs, METH_VARARGS, scan_docs_doc},
    {"simd", simd_name, METH_NOARGS, "The instruction set the kernel uses on this CPU."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_maxsim_kernel", "Fused exhaustive MaxSim kernel (see maxsim.py).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__maxsim_kernel(void) { return PyModule_Create(&module); }
