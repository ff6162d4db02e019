// pinnersage's C interface to hnswlib (header-only, vendored in hnswlib/).
//
// Every function catches C++ exceptions and reports them as a message in `err` (NUL-terminated,
// at most `err_len` bytes) with a failure return value: no exception crosses into Rust.
// Distances are hnswlib's: 1 - <a, b> (inner product space) or |a - b|^2 (L2), computed by
// kernels picked at run time for the CPU.

#include <cstdint>
#include <cstring>
#include <limits>
#include <queue>
#include <vector>
#include <mutex>
#include <exception>
#include <memory>
#include <new>
#include <string>

#include "hnswlib/hnswlib.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define PS_X86 1
#endif

namespace {

float ip_portable(const void* a, const void* b, const void* param) {
    const size_t d = *static_cast<const size_t*>(param);
    const float* x = static_cast<const float*>(a);
    const float* y = static_cast<const float*>(b);
    float s = 0.0f;
    for (size_t i = 0; i < d; i++) s += x[i] * y[i];
    return 1.0f - s;
}

float l2_portable(const void* a, const void* b, const void* param) {
    const size_t d = *static_cast<const size_t*>(param);
    const float* x = static_cast<const float*>(a);
    const float* y = static_cast<const float*>(b);
    float s = 0.0f;
    for (size_t i = 0; i < d; i++) {
        const float t = x[i] - y[i];
        s += t * t;
    }
    return s;
}

#ifdef PS_X86
__attribute__((target("avx512f"))) float ip_avx512(const void* a, const void* b,
                                                   const void* param) {
    const size_t d = *static_cast<const size_t*>(param);
    const float* x = static_cast<const float*>(a);
    const float* y = static_cast<const float*>(b);
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(y + i + 16), s1);
    }
    if (i + 16 <= d) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i), s0);
        i += 16;
    }
    if (i < d) {
        const __mmask16 m = static_cast<__mmask16>((1u << (d - i)) - 1);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i), s1);
    }
    return 1.0f - _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

__attribute__((target("avx512f"))) float l2_avx512(const void* a, const void* b,
                                                   const void* param) {
    const size_t d = *static_cast<const size_t*>(param);
    const float* x = static_cast<const float*>(a);
    const float* y = static_cast<const float*>(b);
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        const __m512 t0 = _mm512_sub_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i));
        const __m512 t1 = _mm512_sub_ps(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(y + i + 16));
        s0 = _mm512_fmadd_ps(t0, t0, s0);
        s1 = _mm512_fmadd_ps(t1, t1, s1);
    }
    if (i + 16 <= d) {
        const __m512 t = _mm512_sub_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i));
        s0 = _mm512_fmadd_ps(t, t, s0);
        i += 16;
    }
    if (i < d) {
        const __mmask16 m = static_cast<__mmask16>((1u << (d - i)) - 1);
        const __m512 t = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i));
        s1 = _mm512_fmadd_ps(t, t, s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

__attribute__((target("avx2,fma"))) float hsum256(__m256 v) {
    const __m128 lo = _mm256_castps256_ps128(v);
    const __m128 hi = _mm256_extractf128_ps(v, 1);
    __m128 s = _mm_add_ps(lo, hi);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) float ip_avx2(const void* a, const void* b, const void* param) {
    const size_t d = *static_cast<const size_t*>(param);
    const float* x = static_cast<const float*>(a);
    const float* y = static_cast<const float*>(b);
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), s1);
    }
    float s = hsum256(_mm256_add_ps(s0, s1));
    for (; i < d; i++) s += x[i] * y[i];
    return 1.0f - s;
}

__attribute__((target("avx2,fma"))) float l2_avx2(const void* a, const void* b, const void* param) {
    const size_t d = *static_cast<const size_t*>(param);
    const float* x = static_cast<const float*>(a);
    const float* y = static_cast<const float*>(b);
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        const __m256 t0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i));
        const __m256 t1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8));
        s0 = _mm256_fmadd_ps(t0, t0, s0);
        s1 = _mm256_fmadd_ps(t1, t1, s1);
    }
    float s = hsum256(_mm256_add_ps(s0, s1));
    for (; i < d; i++) {
        const float t = x[i] - y[i];
        s += t * t;
    }
    return s;
}
#endif

// The distance kernels for this CPU.
class DispatchSpace : public hnswlib::SpaceInterface<float> {
    hnswlib::DISTFUNC<float> dist_;
    size_t dim_;

 public:
    DispatchSpace(bool inner_product, size_t dim) : dim_(dim) {
        dist_ = inner_product ? ip_portable : l2_portable;
#ifdef PS_X86
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f")) {
            dist_ = inner_product ? ip_avx512 : l2_avx512;
        } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
            dist_ = inner_product ? ip_avx2 : l2_avx2;
        }
#endif
    }
    size_t get_data_size() override { return dim_ * sizeof(float); }
    hnswlib::DISTFUNC<float> get_dist_func() override { return dist_; }
    void* get_dist_func_param() override { return &dim_; }
};

// The index and the space it points into (hnswlib keeps a pointer to the space's dimension).
struct PsIndex {
    DispatchSpace space;
    hnswlib::HierarchicalNSW<float>* hnsw = nullptr;
    PsIndex(bool inner_product, size_t dim) : space(inner_product, dim) {}
    ~PsIndex() { delete hnsw; }
};

typedef bool (*ps_keep_fn)(void* ctx, uint32_t row);

class Keep : public hnswlib::BaseFilterFunctor {
    ps_keep_fn keep_;
    void* ctx_;

 public:
    Keep(ps_keep_fn keep, void* ctx) : keep_(keep), ctx_(ctx) {}
    bool operator()(hnswlib::labeltype id) override { return keep_(ctx_, static_cast<uint32_t>(id)); }
};

// hnswlib's searchKnn, made safe beside addPoint: each node's links are copied while holding
// that node's lock, as hnswlib's own inserts read them (searchBaseLayer), and the entry point
// and top level are read under the lock an insert holds while it raises them. Without the
// locks a search can read a link list an insert is rewriting (nmslib/hnswlib#562). A node's
// vector and label are written before any link points at it, under locks this search takes
// after, so what a search reaches is whole. Growing the graph and marking deletions still need
// the graph alone (the Rust side holds its write lock for them).
//
// Returns the `k` nearest kept ids as (distance, label), farthest on top.
std::priority_queue<std::pair<float, hnswlib::labeltype>> search_beside_inserts(
    hnswlib::HierarchicalNSW<float>* h, const void* query, size_t k, hnswlib::BaseFilterFunctor* keep) {
    typedef hnswlib::tableint tableint;
    typedef std::pair<float, tableint> Scored;
    struct ByFirst {
        bool operator()(const Scored& a, const Scored& b) const { return a.first < b.first; }
    };
    std::priority_queue<std::pair<float, hnswlib::labeltype>> result;
    if (h->cur_element_count == 0) return result;
    tableint entry;
    int top_level;
    {
        std::unique_lock<std::mutex> lock(h->global);
        entry = h->enterpoint_node_;
        top_level = h->maxlevel_;
    }
    const hnswlib::DISTFUNC<float> dist = h->fstdistfunc_;
    void* param = h->dist_func_param_;
    std::vector<tableint> links(std::max(h->maxM_, h->maxM0_) + 1);
    // Copies `node`'s links at `level` under its lock; returns how many.
    auto copy_links = [&](tableint node, int level) -> size_t {
        std::unique_lock<std::mutex> lock(h->link_list_locks_[node]);
        hnswlib::linklistsizeint* list = level == 0 ? h->get_linklist0(node) : h->get_linklist(node, level);
        const size_t n = h->getListCount(list);
        std::memcpy(links.data(), list + 1, n * sizeof(tableint));
        return n;
    };

    tableint current = entry;
    float current_dist = dist(query, h->getDataByInternalId(entry), param);
    for (int level = top_level; level > 0; level--) {
        bool changed = true;
        while (changed) {
            changed = false;
            const size_t n = copy_links(current, level);
            for (size_t i = 0; i < n; i++) {
                const float d = dist(query, h->getDataByInternalId(links[i]), param);
                if (d < current_dist) {
                    current_dist = d;
                    current = links[i];
                    changed = true;
                }
            }
        }
    }

    const size_t ef = std::max(h->ef_, k);
    // Without deletions or a filter every node is kept (hnswlib's "bare bone" search skips the
    // check too: it reads another cache line of the node).
    const bool checked = keep != nullptr || h->num_deleted_ > 0;
    auto kept = [&](tableint id) {
        return !checked ||
               (!h->isMarkedDeleted(id) && (keep == nullptr || (*keep)(h->getExternalLabel(id))));
    };
    hnswlib::VisitedList* visited_list = h->visited_list_pool_->getFreeVisitedList();
    hnswlib::vl_type* visited = visited_list->mass;
    const hnswlib::vl_type tag = visited_list->curV;
    std::priority_queue<Scored, std::vector<Scored>, ByFirst> top;         // farthest on top
    std::priority_queue<Scored, std::vector<Scored>, ByFirst> candidates;  // nearest on top (negated)
    float bound = std::numeric_limits<float>::max();
    if (kept(current)) {
        top.emplace(current_dist, current);
        bound = current_dist;
    }
    candidates.emplace(-current_dist, current);
    visited[current] = tag;
    while (!candidates.empty()) {
        const Scored next = candidates.top();
        if (-next.first > bound && top.size() == ef) break;
        candidates.pop();
        const size_t n = copy_links(next.second, 0);
#ifdef USE_SSE
        if (n > 0) {
            _mm_prefetch(reinterpret_cast<const char*>(visited + links[0]), _MM_HINT_T0);
            _mm_prefetch(h->getDataByInternalId(links[0]), _MM_HINT_T0);
        }
#endif
        for (size_t j = 0; j < n; j++) {
            const tableint id = links[j];
#ifdef USE_SSE
            if (j + 1 < n) {
                _mm_prefetch(reinterpret_cast<const char*>(visited + links[j + 1]), _MM_HINT_T0);
                _mm_prefetch(h->getDataByInternalId(links[j + 1]), _MM_HINT_T0);
            }
#endif
            if (visited[id] == tag) continue;
            visited[id] = tag;
            const float d = dist(query, h->getDataByInternalId(id), param);
            if (top.size() < ef || d < bound) {
                candidates.emplace(-d, id);
#ifdef USE_SSE
                _mm_prefetch(reinterpret_cast<const char*>(h->get_linklist0(candidates.top().second)),
                             _MM_HINT_T0);
#endif
                if (kept(id)) top.emplace(d, id);
                if (top.size() > ef) top.pop();
                if (!top.empty()) bound = top.top().first;
            }
        }
    }
    h->visited_list_pool_->releaseVisitedList(visited_list);
    while (top.size() > k) top.pop();
    while (!top.empty()) {
        result.emplace(top.top().first, h->getExternalLabel(top.top().second));
        top.pop();
    }
    return result;
}

void report(char* err, size_t err_len, const char* message) {
    if (err == nullptr || err_len == 0) return;
    std::strncpy(err, message, err_len - 1);
    err[err_len - 1] = '\0';
}

// Runs `body`, turning a C++ exception into `failure` and its message in `err`.
template <typename T, typename F>
T guarded(char* err, size_t err_len, T failure, F body) {
    try {
        return body();
    } catch (const std::exception& e) {
        report(err, err_len, e.what());
    } catch (...) {
        report(err, err_len, "unknown C++ exception");
    }
    return failure;
}

}  // namespace

extern "C" {

// A new empty index for `max_elements` vectors of `dim` floats; null on failure.
void* ps_hnswlib_new(int inner_product, size_t dim, size_t max_elements, size_t m,
                     size_t ef_construction, size_t seed, char* err, size_t err_len) {
    return guarded<void*>(err, err_len, nullptr, [&]() -> void* {
        std::unique_ptr<PsIndex> index(new PsIndex(inner_product != 0, dim));
        index->hnsw = new hnswlib::HierarchicalNSW<float>(&index->space, max_elements, m,
                                                          ef_construction, seed);
        return index.release();
    });
}

// Loads an index saved by ps_hnswlib_save; null on failure.
void* ps_hnswlib_load(int inner_product, size_t dim, const char* path, char* err, size_t err_len) {
    return guarded<void*>(err, err_len, nullptr, [&]() -> void* {
        std::unique_ptr<PsIndex> index(new PsIndex(inner_product != 0, dim));
        index->hnsw = new hnswlib::HierarchicalNSW<float>(&index->space, std::string(path));
        // hnswlib takes the vector size from the space, not the file: a file of another
        // dimension would be read out of step (and out of bounds).
        const size_t stored = index->hnsw->label_offset_ - index->hnsw->offsetData_;
        if (stored != index->space.get_data_size()) {
            throw std::runtime_error("the file holds vectors of " + std::to_string(stored / sizeof(float)) +
                                     " dimensions, expected " + std::to_string(dim));
        }
        return index.release();
    });
}

void ps_hnswlib_free(void* index) { delete static_cast<PsIndex*>(index); }

// Adds one vector under `row` (safe to call from several threads at once); 0 on success.
int ps_hnswlib_add(void* index, const float* vector, uint32_t row, char* err, size_t err_len) {
    return guarded<int>(err, err_len, -1, [&] {
        static_cast<PsIndex*>(index)->hnsw->addPoint(vector, static_cast<hnswlib::labeltype>(row));
        return 0;
    });
}

// Marks `row` deleted: searches skip it from now on. 0 when marked, 1 when the graph does not
// hold `row` or it was deleted already, -1 on failure.
int ps_hnswlib_mark_deleted(void* index, uint32_t row, char* err, size_t err_len) {
    return guarded<int>(err, err_len, -1, [&] {
        hnswlib::HierarchicalNSW<float>* h = static_cast<PsIndex*>(index)->hnsw;
        {
            std::unique_lock<std::mutex> lock(h->label_lookup_lock);
            auto found = h->label_lookup_.find(static_cast<hnswlib::labeltype>(row));
            if (found == h->label_lookup_.end() || h->isMarkedDeleted(found->second)) return 1;
        }
        h->markDelete(static_cast<hnswlib::labeltype>(row));
        return 0;
    });
}

// Vectors the graph has room for.
size_t ps_hnswlib_capacity(void* index) { return static_cast<PsIndex*>(index)->hnsw->max_elements_; }

// Vectors marked deleted.
size_t ps_hnswlib_deleted(void* index) {
    return static_cast<PsIndex*>(index)->hnsw->getDeletedCount();
}

// Makes room for `capacity` vectors (nothing else may use the index meanwhile); 0 on success.
int ps_hnswlib_resize(void* index, size_t capacity, char* err, size_t err_len) {
    return guarded<int>(err, err_len, -1, [&] {
        static_cast<PsIndex*>(index)->hnsw->resizeIndex(capacity);
        return 0;
    });
}

// Writes the index to `path`; 0 on success.
int ps_hnswlib_save(void* index, const char* path, char* err, size_t err_len) {
    return guarded<int>(err, err_len, -1, [&] {
        static_cast<PsIndex*>(index)->hnsw->saveIndex(std::string(path));
        return 0;
    });
}

void ps_hnswlib_set_ef(void* index, size_t ef) { static_cast<PsIndex*>(index)->hnsw->setEf(ef); }

// Sets the candidate list size of the inserts from now on (hnswlib keeps it at least M).
void ps_hnswlib_set_ef_construction(void* index, size_t ef) {
    hnswlib::HierarchicalNSW<float>* h = static_cast<PsIndex*>(index)->hnsw;
    h->ef_construction_ = std::max(ef, h->M_);
}

size_t ps_hnswlib_ef_construction(void* index) {
    return static_cast<PsIndex*>(index)->hnsw->ef_construction_;
}

size_t ps_hnswlib_len(void* index) {
    return static_cast<PsIndex*>(index)->hnsw->getCurrentElementCount();
}

// Bytes of the graph and vectors (level 0 block plus upper-level links).
size_t ps_hnswlib_memory(void* index) {
    const hnswlib::HierarchicalNSW<float>* h = static_cast<PsIndex*>(index)->hnsw;
    size_t bytes = h->max_elements_ * h->size_data_per_element_;
    for (size_t i = 0; i < h->cur_element_count; i++) {
        if (h->element_levels_[i] > 0) bytes += h->size_links_per_element_ * h->element_levels_[i];
    }
    return bytes;
}

// The rows linked to `row` in the bottom layer, written into `rows` (room for `cap`): their
// count (more than `cap` when they did not all fit), or -1 when the graph does not hold `row`.
// Safe beside inserts: the node's links are read under the lock its inserts take, and a node is
// linked to only once its label is written.
long ps_hnswlib_links(void* index, uint32_t row, uint32_t* rows, size_t cap) {
    hnswlib::HierarchicalNSW<float>* h = static_cast<PsIndex*>(index)->hnsw;
    hnswlib::tableint id;
    {
        std::unique_lock<std::mutex> lock(h->label_lookup_lock);
        auto found = h->label_lookup_.find(static_cast<hnswlib::labeltype>(row));
        if (found == h->label_lookup_.end()) return -1;
        id = found->second;
    }
    std::unique_lock<std::mutex> lock(h->link_list_locks_[id]);
    hnswlib::linklistsizeint* list = h->get_linklist0(id);
    const size_t n = h->getListCount(list);
    const hnswlib::tableint* links = reinterpret_cast<const hnswlib::tableint*>(list + 1);
    for (size_t i = 0; i < n && i < cap; i++) {
        rows[i] = static_cast<uint32_t>(h->getExternalLabel(links[i]));
    }
    return static_cast<long>(n);
}

// The `k` nearest rows to `query` kept by `keep` (when not null), closest first, into `rows` and
// `distances` (room for `k` each). `beside_inserts`: inserts may run meanwhile (the search takes
// their per-node locks); else hnswlib's own search, which must have the graph to itself and
// other searches. Returns how many were found, or -1 on failure.
long ps_hnswlib_search(void* index, const float* query, size_t k, ps_keep_fn keep, void* ctx,
                       int beside_inserts, uint32_t* rows, float* distances, char* err,
                       size_t err_len) {
    return guarded<long>(err, err_len, -1, [&] {
        Keep filter(keep, ctx);
        hnswlib::HierarchicalNSW<float>* h = static_cast<PsIndex*>(index)->hnsw;
        auto found = beside_inserts ? search_beside_inserts(h, query, k, keep ? &filter : nullptr)
                                    : h->searchKnn(query, k, keep ? &filter : nullptr);
        long n = static_cast<long>(found.size());
        for (long i = n - 1; i >= 0; i--) {
            rows[i] = static_cast<uint32_t>(found.top().second);
            distances[i] = found.top().first;
            found.pop();
        }
        return n;
    });
}

}  // extern "C"
