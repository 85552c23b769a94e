/* lz4-sys builds liblz4 for wasm32-wasip1 against its own libc shim headers, which call
 * rust_lz4_wasm_shim_*; its Rust side defines those only for wasm32-unknown-unknown. On WASI
 * the real functions are in wasi-libc, which every wasm32-wasip1 program links: forward. */
typedef __SIZE_TYPE__ size_t;
void *malloc(size_t size);
void *calloc(size_t nmemb, size_t size);
void free(void *ptr);
int memcmp(const void *a, const void *b, size_t n);
void *memcpy(void *restrict dest, const void *restrict src, size_t n);
void *memmove(void *dest, const void *src, size_t n);
void *memset(void *dest, int c, size_t n);

void *rust_lz4_wasm_shim_malloc(size_t size) { return malloc(size); }
void *rust_lz4_wasm_shim_calloc(size_t nmemb, size_t size) { return calloc(nmemb, size); }
void rust_lz4_wasm_shim_free(void *ptr) { free(ptr); }
int rust_lz4_wasm_shim_memcmp(const void *a, const void *b, size_t n) { return memcmp(a, b, n); }
void *rust_lz4_wasm_shim_memcpy(void *restrict dest, const void *restrict src, size_t n) { return memcpy(dest, src, n); }
void *rust_lz4_wasm_shim_memmove(void *dest, const void *src, size_t n) { return memmove(dest, src, n); }
void *rust_lz4_wasm_shim_memset(void *dest, int c, size_t n) { return memset(dest, c, n); }
