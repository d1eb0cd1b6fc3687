/* pagerfs.store._codec: the store's block codec in C (docs/ARCHITECTURE.md, "native").
 *
 * A stored block is read, decompressed and verified, or hashed and compressed, in one
 * call that releases the GIL for all of its work, so two threads decode two blocks side
 * by side. lz4 is Debian's liblz4, SHA-256 OpenSSL's libcrypto (SHA-NI where the CPU has
 * it); nothing here is a hand-written codec. pagerfs/store/_codec_py.py is the same API
 * in Python, the tests' oracle: every result here must equal its result byte for byte.
 *
 * Verification works on byte regions of the uncompressed block, each hashed page by page
 * (4 KiB, the last page of a region zero padded, as fs-verity pads a file's last block),
 * so any byte region of a block can be checked against hashes of its own. The store
 * checks whole pages of a block against the block's page hashes (format 5): without
 * regions, every page of the block, in one call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lz4.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>

#define PAGE 4096
#define HASH 32

static const unsigned char zero_page[PAGE];
static const EVP_MD *sha256_md;
static PyObject *ShortReadError;
static PyObject *DecodeError;

/* ---- scratch memory: one growing buffer per thread, for compressed bytes ---------- */

/* A fresh 128 KiB malloc per block costs page faults (glibc gives such sizes back to the
 * kernel), so each thread keeps its largest buffer; the key's destructor frees it when
 * the thread ends. */
static pthread_key_t scratch_key;

struct scratch {
    size_t cap;
    unsigned char bytes[];
};

static unsigned char *
scratch(size_t n)
{
    struct scratch *s = pthread_getspecific(scratch_key);
    if (s == NULL || s->cap < n) {
        struct scratch *grown = realloc(s, sizeof *s + n);
        if (grown == NULL)
            return NULL;  /* the old buffer stays the thread's */
        grown->cap = n;
        s = grown;
        pthread_setspecific(scratch_key, s);
    }
    return s->bytes;
}

/* ---- hashing (no GIL needed) ------------------------------------------------------ */

/* SHA-256 of a[0:na] followed by b[0:nb]; 0, or -1 if OpenSSL failed. */
static int
sha256_cat(EVP_MD_CTX *ctx, const void *a, size_t na, const void *b, size_t nb,
           unsigned char *out)
{
    unsigned int len;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    if (!EVP_DigestInit_ex2(ctx, sha256_md, NULL))
#else
    if (!EVP_DigestInit_ex(ctx, sha256_md, NULL))
#endif
        return -1;
    if (!EVP_DigestUpdate(ctx, a, na) || (nb && !EVP_DigestUpdate(ctx, b, nb)))
        return -1;
    return EVP_DigestFinal_ex(ctx, out, &len) ? 0 : -1;
}

/* The hash of one page: n <= PAGE bytes, zero padded to PAGE. */
static int
hash_page(EVP_MD_CTX *ctx, const unsigned char *p, size_t n, unsigned char *out)
{
    return sha256_cat(ctx, p, n, zero_page, PAGE - n, out);
}

/* The page hashes of p[0:n] into out (32 bytes per page, the last page zero padded). */
static int
hash_span(EVP_MD_CTX *ctx, const unsigned char *p, size_t n, unsigned char *out)
{
    for (size_t at = 0; at < n; at += PAGE, out += HASH) {
        if (hash_page(ctx, p + at, n - at < PAGE ? n - at : PAGE, out) < 0)
            return -1;
    }
    return 0;
}

static Py_ssize_t
pages_of(Py_ssize_t n)
{
    return n / PAGE + (n % PAGE != 0);
}

/* ---- what to verify: parsed with the GIL, used without it -------------------------- */

typedef struct {
    Py_ssize_t offset, length;
} Region;

typedef struct {
    Py_buffer hashes;
    Region *regions;
    Region whole;      /* regions points here when the caller gave none */
    Py_ssize_t nregions;
    Py_ssize_t npages; /* = len(hashes) / 32 */
    Py_ssize_t *bad;   /* npages slots */
} Check;

static void
check_release(Check *c)
{
    if (c->hashes.buf)
        PyBuffer_Release(&c->hashes);
    if (c->regions != &c->whole)
        PyMem_Free(c->regions);
    PyMem_Free(c->bad);
    c->regions = NULL;
    c->bad = NULL;
}

/* Parse (hashes, regions) for a block of `length` bytes; -1 with an exception. */
static int
check_parse(Check *c, Py_ssize_t length, PyObject *hashes, PyObject *regions)
{
    memset(c, 0, sizeof *c);
    c->regions = &c->whole;
    if (PyObject_GetBuffer(hashes, &c->hashes, PyBUF_SIMPLE) < 0)
        return -1;
    if (regions == Py_None) {
        c->whole.offset = 0;
        c->whole.length = length;
        c->nregions = 1;
        c->npages = pages_of(length);
    } else {
        PyObject *seq = PySequence_Fast(regions, "regions must be a sequence of (offset, length)");
        if (seq == NULL)
            goto fail;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        c->regions = PyMem_Malloc((n ? n : 1) * sizeof(Region));
        if (c->regions == NULL) {
            Py_DECREF(seq);
            PyErr_NoMemory();
            goto fail;
        }
        c->nregions = n;
        for (Py_ssize_t i = 0; i < n; i++) {
            Region *r = &c->regions[i];
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "nn;a region is (offset, length)",
                                  &r->offset, &r->length)) {
                Py_DECREF(seq);
                goto fail;
            }
            if (r->offset < 0 || r->length < 0 || r->offset > length - r->length) {
                PyErr_Format(PyExc_ValueError, "region (%zd, %zd) is not inside a block of %zd bytes",
                             r->offset, r->length, length);
                Py_DECREF(seq);
                goto fail;
            }
            c->npages += pages_of(r->length);
        }
        Py_DECREF(seq);
    }
    if (c->hashes.len != c->npages * HASH) {
        PyErr_Format(PyExc_ValueError, "%zd bytes of page hashes for %zd pages", c->hashes.len,
                     c->npages);
        goto fail;
    }
    c->bad = PyMem_Malloc((c->npages ? c->npages : 1) * sizeof(Py_ssize_t));
    if (c->bad == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    return 0;
fail:
    check_release(c);
    return -1;
}

/* The bad pages of `data` (indices into the hashes, in order) into c->bad; their count,
 * or -1 if OpenSSL failed. No GIL needed. */
static Py_ssize_t
check_run(const Check *c, EVP_MD_CTX *ctx, const unsigned char *data)
{
    const unsigned char *want = c->hashes.buf;
    unsigned char got[HASH];
    Py_ssize_t nbad = 0, page = 0;
    for (Py_ssize_t i = 0; i < c->nregions; i++) {
        const Region *r = &c->regions[i];
        for (Py_ssize_t at = 0; at < r->length; at += PAGE, page++) {
            size_t take = r->length - at < PAGE ? r->length - at : PAGE;
            if (hash_page(ctx, data + r->offset + at, take, got) < 0)
                return -1;
            if (memcmp(got, want + page * HASH, HASH) != 0)
                c->bad[nbad++] = page;
        }
    }
    return nbad;
}

static PyObject *
bad_list(const Check *c, Py_ssize_t nbad)
{
    PyObject *list = PyList_New(nbad);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < nbad; i++) {
        PyObject *v = PyLong_FromSsize_t(c->bad[i]);
        if (v == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, v);
    }
    return list;
}

/* ---- the shared core of read_block and decode_block ------------------------------ */

enum outcome { OK, NO_MEMORY, HASH_FAILED, READ_FAILED, SHORT_READ, LZ4_FAILED, WRONG_LENGTH };

static PyObject *
raise_for(enum outcome o, int err)
{
    switch (o) {
    case NO_MEMORY:
        return PyErr_NoMemory();
    case HASH_FAILED:
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL SHA-256 failed");
        return NULL;
    case READ_FAILED:
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    case SHORT_READ:
        PyErr_SetString(ShortReadError, "short read: the image was truncated");
        return NULL;
    case LZ4_FAILED:
        PyErr_SetString(DecodeError, "lz4 decompression failed");
        return NULL;
    case WRONG_LENGTH:
        PyErr_SetString(DecodeError, "wrong uncompressed length");
        return NULL;
    default:
        return NULL;
    }
}

/* Reads up to n bytes at off into dst, retrying short reads and EINTR: the count read
 * (less than n only at end of file), or -1 with errno set. Needs no GIL. */
static ssize_t
pread_full(int fd, void *dst, size_t n, off_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)dst + got, n - got, off + (off_t)got);
        if (r > 0)
            got += (size_t)r;
        else if (r == 0)
            break;
        else if (errno != EINTR)
            return -1;
    }
    return (ssize_t)got;
}

/* lz4-decode src into dst (exactly raw bytes) and verify; no GIL needed. */
static enum outcome
decode_and_check(const Check *c, const unsigned char *src, size_t stored, unsigned char *dst,
                 size_t raw, int compressed, Py_ssize_t *nbad)
{
    if (compressed) {
        int n = LZ4_decompress_safe((const char *)src, (char *)dst, (int)stored, (int)raw);
        /* python-lz4 (the oracle) reports a short decode as a failed decompression too */
        if (n < 0 || (size_t)n != raw)
            return LZ4_FAILED;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL)
        return NO_MEMORY;
    *nbad = check_run(c, ctx, dst);
    EVP_MD_CTX_free(ctx);
    return *nbad < 0 ? HASH_FAILED : OK;
}

static int
valid_lengths(Py_ssize_t stored, Py_ssize_t raw)
{
    if (raw < 1 || raw > LZ4_MAX_INPUT_SIZE || stored < 1 || stored > raw) {
        PyErr_Format(PyExc_ValueError, "a block of %zd bytes cannot be stored in %zd", raw, stored);
        return 0;
    }
    return 1;
}

static PyObject *
result(PyObject *data, const Check *c, Py_ssize_t nbad)
{
    PyObject *bad = bad_list(c, nbad);
    if (bad == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    PyObject *t = PyTuple_Pack(2, data, bad);
    Py_DECREF(data);
    Py_DECREF(bad);
    return t;
}

/* ---- entry points ---------------------------------------------------------------- */

PyDoc_STRVAR(read_block_doc,
"read_block(fd, offset, stored_len, raw_len, hashes, regions=None) -> (data, bad)\n\n"
"pread the stored block (stored_len bytes at offset; stored raw when stored_len ==\n"
"raw_len), lz4-decode it to raw_len bytes and verify it, all without the GIL.\n"
"regions None: every page of the block against its page `hashes`; else the pages\n"
"of each (offset, length) byte region against `hashes` (theirs, concatenated).\n"
"bad: indices into hashes of the pages that failed. Raises OSError (pread),\n"
"ShortReadError (the image ends early), DecodeError (lz4 garbage, wrong length).");

static PyObject *
read_block(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"fd", "offset", "stored_len", "raw_len", "hashes", "regions", NULL};
    int fd;
    long long offset;
    Py_ssize_t stored, raw;
    PyObject *hashes, *regions = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iLnnO|O:read_block", names, &fd, &offset,
                                     &stored, &raw, &hashes, &regions))
        return NULL;
    if (!valid_lengths(stored, raw))
        return NULL;
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "negative offset");
        return NULL;
    }
    Check c;
    if (check_parse(&c, raw, hashes, regions) < 0)
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, raw);
    if (out == NULL) {
        check_release(&c);
        return NULL;
    }
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    int compressed = stored < raw;
    enum outcome o = OK;
    int err = 0;
    Py_ssize_t nbad = 0;
    Py_BEGIN_ALLOW_THREADS
    unsigned char *src = compressed ? scratch(stored) : dst;
    if (src == NULL)
        o = NO_MEMORY;
    if (o == OK) {
        ssize_t got = pread_full(fd, src, stored, offset);
        if (got < 0) {
            err = errno;
            o = READ_FAILED;
        } else if (got < stored) {
            o = SHORT_READ;
        }
    }
    if (o == OK)
        o = decode_and_check(&c, src, stored, dst, raw, compressed, &nbad);
    Py_END_ALLOW_THREADS
    if (o != OK) {
        check_release(&c);
        Py_DECREF(out);
        return raise_for(o, err);
    }
    PyObject *t = result(out, &c, nbad);
    check_release(&c);
    return t;
}

PyDoc_STRVAR(decode_block_doc,
"decode_block(stored, raw_len, compressed, hashes, regions=None) -> (data, bad)\n\n"
"read_block for stored bytes already in memory (fault injection alters them between the\n"
"pread and the decode). compressed: the block table says lz4 (stored_len < raw_len);\n"
"raw bytes of another length than raw_len raise DecodeError.");

static PyObject *
decode_block(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"stored", "raw_len", "compressed", "hashes", "regions", NULL};
    Py_buffer in;
    Py_ssize_t raw;
    int compressed;
    PyObject *hashes, *regions = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*npO|O:decode_block", names, &in, &raw,
                                     &compressed, &hashes, &regions))
        return NULL;
    PyObject *out = NULL;
    Check c;
    if (raw < 1 || raw > LZ4_MAX_INPUT_SIZE || in.len > LZ4_MAX_INPUT_SIZE) {
        PyErr_Format(PyExc_ValueError, "a block of %zd bytes cannot be stored in %zd", raw, in.len);
        goto done;
    }
    if (check_parse(&c, raw, hashes, regions) < 0)
        goto done;
    if (!compressed && in.len != raw) {
        check_release(&c);
        raise_for(WRONG_LENGTH, 0);
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, raw);
    if (out == NULL) {
        check_release(&c);
        goto done;
    }
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    enum outcome o;
    Py_ssize_t nbad = 0;
    Py_BEGIN_ALLOW_THREADS
    if (!compressed)
        memcpy(dst, in.buf, raw);
    o = decode_and_check(&c, in.buf, in.len, dst, raw, compressed, &nbad);
    Py_END_ALLOW_THREADS
    if (o != OK) {
        check_release(&c);
        Py_CLEAR(out);
        raise_for(o, 0);
        goto done;
    }
    out = result(out, &c, nbad);
    check_release(&c);
done:
    PyBuffer_Release(&in);
    return out;
}

PyDoc_STRVAR(check_pages_doc,
"check_pages(data, hashes, regions=None) -> bad\n\n"
"Verify bytes already decoded (a cached block) as read_block does; the bad pages.");

static PyObject *
check_pages(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"data", "hashes", "regions", NULL};
    Py_buffer data;
    PyObject *hashes, *regions = Py_None, *bad = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*O|O:check_pages", names, &data, &hashes,
                                     &regions))
        return NULL;
    Check c;
    if (check_parse(&c, data.len, hashes, regions) == 0) {
        Py_ssize_t nbad = -1;
        Py_BEGIN_ALLOW_THREADS
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        if (ctx != NULL) {
            nbad = check_run(&c, ctx, data.buf);
            EVP_MD_CTX_free(ctx);
        }
        Py_END_ALLOW_THREADS
        bad = nbad < 0 ? raise_for(HASH_FAILED, 0) : bad_list(&c, nbad);
        check_release(&c);
    }
    PyBuffer_Release(&data);
    return bad;
}

PyDoc_STRVAR(hash_pages_doc,
"hash_pages(buf, offset=0, length=None) -> bytes\n\n"
"SHA-256 of each 4 KiB page of buf[offset:offset+length] (the last page zero padded to\n"
"4 KiB: the fs-verity leaf hash of a file's last block), concatenated.");

static PyObject *
hash_pages(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"buf", "offset", "length", NULL};
    Py_buffer buf;
    Py_ssize_t offset = 0;
    PyObject *length_o = Py_None, *out = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|nO:hash_pages", names, &buf, &offset, &length_o))
        return NULL;
    Py_ssize_t length = buf.len - offset;
    if (length_o != Py_None && (length = PyLong_AsSsize_t(length_o)) == -1 && PyErr_Occurred())
        goto done;
    if (offset < 0 || length < 0 || offset > buf.len - length) {
        PyErr_Format(PyExc_ValueError, "bytes %zd+%zd are not inside a buffer of %zd", offset,
                     length, buf.len);
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, pages_of(length) * HASH);
    if (out == NULL)
        goto done;
    int rc = -1;
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx != NULL) {
        rc = hash_span(ctx, (const unsigned char *)buf.buf + offset, length, dst);
        EVP_MD_CTX_free(ctx);
    }
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        Py_CLEAR(out);
        raise_for(HASH_FAILED, 0);
    }
done:
    PyBuffer_Release(&buf);
    return out;
}

PyDoc_STRVAR(encode_block_doc,
"encode_block(data) -> (stored, hashes)\n\n"
"For the builder, in one call without the GIL: the page hashes of data (each 4 KiB\n"
"page, the last zero padded) and the stored bytes: lz4 (LZ4_compress_default, as\n"
"mksquashfs -comp lz4 and python-lz4 use it), or data itself when that is no smaller\n"
"(a block stored raw has stored_len == raw_len).");

/* The page hashes of len bytes at src into hashes, and their lz4 into dst (of bound
 * bytes): the stored length, or 0 if the block is to be stored raw (lz4 made it no
 * smaller); -1 if hashing failed. Needs no GIL. */
static int
encode_into(EVP_MD_CTX *ctx, const unsigned char *src, int len, char *dst, int bound,
            unsigned char *hashes)
{
    if (hash_span(ctx, src, len, hashes) < 0)
        return -1;
    int packed = LZ4_compress_default((const char *)src, dst, len, bound);
    return packed > 0 && packed < len ? packed : 0;
}

static PyObject *
encode_block(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"data", NULL};
    PyObject *data_o, *stored = NULL, *hashes = NULL, *ret = NULL;
    Py_buffer data;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:encode_block", names, &data_o))
        return NULL;
    if (PyObject_GetBuffer(data_o, &data, PyBUF_SIMPLE) < 0)
        return NULL;
    if (data.len < 1 || data.len > LZ4_MAX_INPUT_SIZE) {
        PyErr_Format(PyExc_ValueError, "cannot store a block of %zd bytes", data.len);
        goto done;
    }
    hashes = PyBytes_FromStringAndSize(NULL, pages_of(data.len) * HASH);
    if (hashes == NULL)
        goto done;
    int bound = LZ4_compressBound((int)data.len);
    stored = PyBytes_FromStringAndSize(NULL, bound);
    if (stored == NULL)
        goto done;
    unsigned char *h = (unsigned char *)PyBytes_AS_STRING(hashes);
    int packed = -1;
    Py_BEGIN_ALLOW_THREADS
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx != NULL) {
        packed = encode_into(ctx, data.buf, (int)data.len, PyBytes_AS_STRING(stored), bound, h);
        EVP_MD_CTX_free(ctx);
    }
    Py_END_ALLOW_THREADS
    if (packed < 0) {
        raise_for(HASH_FAILED, 0);
        goto done;
    }
    if (packed > 0) {
        if (_PyBytes_Resize(&stored, packed) < 0)
            goto done;  /* stored is NULL now */
    } else if (PyBytes_CheckExact(data_o)) {
        /* raw: the caller's bytes are the stored bytes */
        Py_INCREF(data_o);
        Py_SETREF(stored, data_o);
    } else {
        Py_SETREF(stored, PyBytes_FromStringAndSize(data.buf, data.len));
        if (stored == NULL)
            goto done;
    }
    ret = PyTuple_Pack(2, stored, hashes);
done:
    Py_XDECREF(stored);
    Py_XDECREF(hashes);
    PyBuffer_Release(&data);
    return ret;
}

PyDoc_STRVAR(encode_blocks_doc,
"encode_blocks(data, size) -> list of (stored, hashes)\n\n"
"encode_block of each size bytes of data in turn (the last one may be shorter), all in\n"
"one call without the GIL: a piece of a big file costs one GIL hand-off, not one per\n"
"chunk.");

static PyObject *
encode_blocks(PyObject *self, PyObject *args)
{
    Py_buffer data;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "y*n:encode_blocks", &data, &size))
        return NULL;
    PyObject *out = NULL;
    int *packed = NULL;
    Py_ssize_t n = 0;
    if (size < 1 || size > LZ4_MAX_INPUT_SIZE) {
        PyErr_Format(PyExc_ValueError, "cannot store blocks of %zd bytes", size);
        goto done;
    }
    n = data.len / size + (data.len % size != 0);
    packed = PyMem_Calloc(n ? n : 1, sizeof *packed);
    out = PyList_New(n);
    if (packed == NULL || out == NULL) {
        if (out != NULL)
            PyErr_NoMemory();
        Py_CLEAR(out);
        goto done;
    }
    int bound = LZ4_compressBound((int)size);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t len = data.len - i * size < size ? data.len - i * size : size;
        PyObject *stored = PyBytes_FromStringAndSize(NULL, bound);
        PyObject *hashes = stored ? PyBytes_FromStringAndSize(NULL, pages_of(len) * HASH) : NULL;
        PyObject *pair = hashes ? PyTuple_Pack(2, stored, hashes) : NULL;
        Py_XDECREF(stored);
        Py_XDECREF(hashes);
        if (pair == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, pair);
    }
    int rc = 0;
    /* `out` is ours alone while the GIL is released: its buffers are written here. */
    Py_BEGIN_ALLOW_THREADS
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL)
        rc = -1;
    for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
        const char *src = (const char *)data.buf + i * size;
        int len = (int)(data.len - i * size < size ? data.len - i * size : size);
        PyObject *pair = PyList_GET_ITEM(out, i);
        char *dst = PyBytes_AS_STRING(PyTuple_GET_ITEM(pair, 0));
        int got = encode_into(ctx, (const unsigned char *)src, len, dst, bound,
                              (unsigned char *)PyBytes_AS_STRING(PyTuple_GET_ITEM(pair, 1)));
        if (got < 0) {
            rc = -1;
        } else if (got == 0) {  /* stored raw */
            memcpy(dst, src, len);
            got = len;
        }
        packed[i] = got;
    }
    EVP_MD_CTX_free(ctx);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        Py_CLEAR(out);
        raise_for(HASH_FAILED, 0);
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        /* The tuple is new and only the list holds it, so its stored bytes are
         * referenced once: taken out, resized in place, put back. */
        PyObject *pair = PyList_GET_ITEM(out, i);
        PyObject *stored = PyTuple_GET_ITEM(pair, 0);
        PyTuple_SET_ITEM(pair, 0, NULL);
        int failed = _PyBytes_Resize(&stored, packed[i]) < 0;  /* stored NULL if failed */
        PyTuple_SET_ITEM(pair, 0, stored);
        if (failed) {
            Py_CLEAR(out);
            goto done;
        }
    }
done:
    PyMem_Free(packed);
    PyBuffer_Release(&data);
    return out;
}

PyDoc_STRVAR(read_files_doc,
"read_files(paths, starts, lengths, keyed=None) -> list of bytes\n\n"
"For the builder: bytes [start, start + length) of each file, each opened (O_NOFOLLOW,\n"
"O_NONBLOCK), read and closed in one call without the GIL, so that a batch of small\n"
"files costs one GIL hand-off, not three per file. A result is shorter than asked\n"
"when the file ended first. Raises OSError (with the path) for the first file that\n"
"cannot be opened or read.\n"
"keyed (a sequence as long as paths): each result is (bytes, key) instead, key the\n"
"SHA-256 of the bytes read where keyed[i] is true, else b'' (a small file's tail is\n"
"hashed to find its duplicates, in the same call, not in Python holding the GIL).");

static PyObject *
read_files(PyObject *self, PyObject *args)
{
    PyObject *paths_o, *starts_o, *lengths_o, *keyed_o = Py_None;
    if (!PyArg_ParseTuple(args, "OOO|O:read_files", &paths_o, &starts_o, &lengths_o, &keyed_o))
        return NULL;
    PyObject *paths = PySequence_Fast(paths_o, "paths must be a sequence of bytes");
    PyObject *starts = paths ? PySequence_Fast(starts_o, "starts must be a sequence") : NULL;
    PyObject *lengths = starts ? PySequence_Fast(lengths_o, "lengths must be a sequence") : NULL;
    PyObject *keyed = NULL;
    if (lengths != NULL && keyed_o != Py_None)
        keyed = PySequence_Fast(keyed_o, "keyed must be a sequence");
    PyObject *out = NULL;
    Py_ssize_t n = 0, *start = NULL, *want = NULL, *got = NULL;
    int *err = NULL;
    unsigned char *key = NULL;  /* 32 bytes per file; all zero: not keyed */
    char *wants_key = NULL;
    if (lengths == NULL || (keyed_o != Py_None && keyed == NULL))
        goto done;
    n = PySequence_Fast_GET_SIZE(paths);
    if (PySequence_Fast_GET_SIZE(starts) != n || PySequence_Fast_GET_SIZE(lengths) != n
        || (keyed != NULL && PySequence_Fast_GET_SIZE(keyed) != n)) {
        PyErr_SetString(PyExc_ValueError, "paths, starts, lengths and keyed differ in length");
        goto done;
    }
    start = PyMem_Malloc((n ? n : 1) * sizeof *start);
    want = PyMem_Malloc((n ? n : 1) * sizeof *want);
    got = PyMem_Calloc(n ? n : 1, sizeof *got);
    err = PyMem_Calloc(n ? n : 1, sizeof *err);
    wants_key = PyMem_Calloc(n ? n : 1, 1);
    key = keyed ? PyMem_Malloc((n ? n : 1) * HASH) : NULL;
    out = PyList_New(n);
    if (start == NULL || want == NULL || got == NULL || err == NULL || wants_key == NULL
        || (keyed != NULL && key == NULL) || out == NULL) {
        if (out != NULL)
            PyErr_NoMemory();
        Py_CLEAR(out);
        goto done;
    }
    for (Py_ssize_t i = 0; keyed != NULL && i < n; i++) {
        int truth = PyObject_IsTrue(PySequence_Fast_GET_ITEM(keyed, i));
        if (truth < 0) {
            Py_CLEAR(out);
            goto done;
        }
        wants_key[i] = (char)truth;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *path = PySequence_Fast_GET_ITEM(paths, i);
        if (!PyBytes_Check(path) || strlen(PyBytes_AS_STRING(path)) != (size_t)PyBytes_GET_SIZE(path)) {
            PyErr_SetString(PyExc_ValueError, "a path is bytes without NUL");
            Py_CLEAR(out);
            goto done;
        }
        start[i] = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(starts, i));
        want[i] = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(lengths, i));
        if (PyErr_Occurred() || start[i] < 0 || want[i] < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "negative start or length");
            Py_CLEAR(out);
            goto done;
        }
        PyObject *buf = PyBytes_FromStringAndSize(NULL, want[i]);
        if (buf == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, buf);
    }
    Py_ssize_t failed = -1;
    int hash_failed = 0;
    /* The paths and buffers stay alive: `paths` (a list or tuple we hold) and `out`
     * (ours alone) reference them while the GIL is released. */
    Py_BEGIN_ALLOW_THREADS
    EVP_MD_CTX *ctx = keyed ? EVP_MD_CTX_new() : NULL;
    hash_failed = keyed != NULL && ctx == NULL;
    for (Py_ssize_t i = 0; i < n && failed < 0 && !hash_failed; i++) {
        int fd = open(PyBytes_AS_STRING(PySequence_Fast_GET_ITEM(paths, i)),
                      O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
            err[i] = errno;
            failed = i;
            break;
        }
        got[i] = pread_full(fd, PyBytes_AS_STRING(PyList_GET_ITEM(out, i)), want[i], start[i]);
        if (got[i] < 0) {
            err[i] = errno;
            failed = i;
        } else if (wants_key[i]) {
            hash_failed = sha256_cat(ctx, PyBytes_AS_STRING(PyList_GET_ITEM(out, i)),
                                     (size_t)got[i], NULL, 0, key + i * HASH) < 0;
        }
        close(fd);
    }
    EVP_MD_CTX_free(ctx);
    Py_END_ALLOW_THREADS
    if (hash_failed) {
        raise_for(HASH_FAILED, 0);
        Py_CLEAR(out);
        goto done;
    }
    if (failed >= 0) {
        errno = err[failed];
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, PySequence_Fast_GET_ITEM(paths, failed));
        Py_CLEAR(out);
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (got[i] < want[i]) {
            PyObject *short_ = PyBytes_FromStringAndSize(PyBytes_AS_STRING(PyList_GET_ITEM(out, i)), got[i]);
            if (short_ == NULL) {
                Py_CLEAR(out);
                goto done;
            }
            PyList_SetItem(out, i, short_);
        }
    }
    for (Py_ssize_t i = 0; keyed != NULL && i < n; i++) {
        PyObject *k = PyBytes_FromStringAndSize((const char *)key + i * HASH, wants_key[i] ? HASH : 0);
        PyObject *pair = k ? PyTuple_Pack(2, PyList_GET_ITEM(out, i), k) : NULL;
        Py_XDECREF(k);
        if (pair == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SetItem(out, i, pair);  /* drops the list's reference to the bytes */
    }
done:
    Py_XDECREF(paths);
    Py_XDECREF(starts);
    Py_XDECREF(lengths);
    Py_XDECREF(keyed);
    PyMem_Free(start);
    PyMem_Free(want);
    PyMem_Free(got);
    PyMem_Free(err);
    PyMem_Free(wants_key);
    PyMem_Free(key);
    return out;
}

PyDoc_STRVAR(list_dir_doc,
"list_dir(path) -> list of (name, mode, ino, dev, nlink, uid, gid, size, blocks,\n"
"                          mtime_ns, target)\n\n"
"For the builder's scan: the entries of a directory sorted by name (as sorted() sorts\n"
"bytes), each lstat'ed, and a symlink's target read (target None for the others), in\n"
"one call without the GIL: a tree of 60,000 files costs one call per directory, not a\n"
"stat_result and a path join per file. Raises OSError naming the directory, or the\n"
"entry that could not be lstat'ed or read.");

typedef struct {
    char *name;
    struct stat st;
    char *target;  /* symlinks only */
} Entry;

static int
by_name(const void *a, const void *b)
{
    /* strcmp compares as unsigned char: the order of sorted() on bytes without NUL */
    return strcmp(((const Entry *)a)->name, ((const Entry *)b)->name);
}

/* Reads the entries of the directory at path into *out (sorted, lstat'ed, targets
 * read); their count, or -1 with errno set and *failed the name of the entry that
 * failed (malloc'ed; NULL: the directory itself, or no memory). Needs no GIL. */
static Py_ssize_t
list_entries(const char *path, Entry **out, char **failed)
{
    Entry *es = NULL;
    Py_ssize_t n = 0, cap = 0;
    *failed = NULL;
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = dfd < 0 ? NULL : fdopendir(dfd);
    if (dir == NULL) {
        int e = errno;
        if (dfd >= 0)
            close(dfd);
        errno = e;
        return -1;
    }
    int e = 0;
    for (;;) {
        errno = 0;
        struct dirent *d = readdir(dir);
        if (d == NULL) {
            e = errno;
            break;
        }
        if (d->d_name[0] == '.' && (d->d_name[1] == 0 || (d->d_name[1] == '.' && d->d_name[2] == 0)))
            continue;
        if (n == cap) {
            Entry *grown = realloc(es, (cap = cap ? 2 * cap : 64) * sizeof *es);
            if (grown == NULL) {
                e = ENOMEM;
                break;
            }
            es = grown;
        }
        es[n].target = NULL;
        if ((es[n].name = strdup(d->d_name)) == NULL) {
            e = ENOMEM;
            break;
        }
        n++;
    }
    if (e == 0) {
        qsort(es, n, sizeof *es, by_name);
        for (Py_ssize_t i = 0; i < n && e == 0; i++) {
            if (fstatat(dfd, es[i].name, &es[i].st, AT_SYMLINK_NOFOLLOW) < 0) {
                e = errno;
            } else if (S_ISLNK(es[i].st.st_mode)) {
                /* st_size is the target's length, but the link may change under us:
                 * grow until readlink leaves room to spare */
                for (size_t size = (size_t)es[i].st.st_size + 1;; size *= 2) {
                    char *t = realloc(es[i].target, size);
                    if (t == NULL) {
                        e = ENOMEM;
                        break;
                    }
                    es[i].target = t;
                    ssize_t got = readlinkat(dfd, es[i].name, t, size);
                    if (got < 0) {
                        e = errno;
                        break;
                    }
                    if ((size_t)got < size) {
                        es[i].st.st_size = got;  /* what was read is the target */
                        break;
                    }
                }
            }
            if (e != 0 && e != ENOMEM) {
                *failed = es[i].name;  /* the caller's now */
                es[i].name = NULL;
            }
        }
    }
    closedir(dir);
    *out = es;
    if (e != 0) {
        for (Py_ssize_t i = 0; i < n; i++) {
            free(es[i].name);
            free(es[i].target);
        }
        free(es);
        *out = NULL;
        errno = e;
        return -1;
    }
    return n;
}

static PyObject *
list_dir(PyObject *self, PyObject *args)
{
    PyObject *path_o;
    if (!PyArg_ParseTuple(args, "O&:list_dir", PyUnicode_FSConverter, &path_o))
        return NULL;
    const char *path = PyBytes_AS_STRING(path_o);
    if (strlen(path) != (size_t)PyBytes_GET_SIZE(path_o)) {
        PyErr_SetString(PyExc_ValueError, "a path is bytes without NUL");
        Py_DECREF(path_o);
        return NULL;
    }
    Entry *es;
    Py_ssize_t n;
    char *failed;
    int err;
    Py_BEGIN_ALLOW_THREADS
    n = list_entries(path, &es, &failed);
    err = errno;
    Py_END_ALLOW_THREADS
    if (n < 0) {
        errno = err;
        if (err == ENOMEM) {
            PyErr_NoMemory();
        } else if (failed == NULL) {
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path_o);
        } else {  /* named as the builder names it: directory/entry */
            size_t len = strlen(path);
            PyObject *name = PyBytes_FromFormat("%s%s%s", path,
                                                len && path[len - 1] == '/' ? "" : "/", failed);
            if (name != NULL) {
                errno = err;
                PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
                Py_DECREF(name);
            }
        }
        free(failed);
        Py_DECREF(path_o);
        return NULL;
    }
    Py_DECREF(path_o);
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; i < n && out != NULL; i++) {
        const struct stat *st = &es[i].st;
        PyObject *t = Py_BuildValue(
            "(yIKKKIILLLN)", es[i].name, (unsigned int)st->st_mode,
            (unsigned long long)st->st_ino, (unsigned long long)st->st_dev,
            (unsigned long long)st->st_nlink, (unsigned int)st->st_uid, (unsigned int)st->st_gid,
            (long long)st->st_size, (long long)st->st_blocks,
            (long long)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec,
            es[i].target ? PyBytes_FromStringAndSize(es[i].target, st->st_size)
                         : Py_NewRef(Py_None));
        if (t == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, t);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        free(es[i].name);
        free(es[i].target);
    }
    free(es);
    return out;
}

static PyMethodDef methods[] = {
    {"read_block", (PyCFunction)(void (*)(void))read_block, METH_VARARGS | METH_KEYWORDS, read_block_doc},
    {"decode_block", (PyCFunction)(void (*)(void))decode_block, METH_VARARGS | METH_KEYWORDS, decode_block_doc},
    {"check_pages", (PyCFunction)(void (*)(void))check_pages, METH_VARARGS | METH_KEYWORDS, check_pages_doc},
    {"hash_pages", (PyCFunction)(void (*)(void))hash_pages, METH_VARARGS | METH_KEYWORDS, hash_pages_doc},
    {"encode_block", (PyCFunction)(void (*)(void))encode_block, METH_VARARGS | METH_KEYWORDS, encode_block_doc},
    {"encode_blocks", encode_blocks, METH_VARARGS, encode_blocks_doc},
    {"read_files", read_files, METH_VARARGS, read_files_doc},
    {"list_dir", list_dir, METH_VARARGS, list_dir_doc},
    {NULL, NULL, 0, NULL},
};

static void
free_scratch(void *p)
{
    free(p);
}

#ifndef PAGERFS_SOURCE_DIGEST  /* setup.py defines it: the SHA-256 of this file */
#define PAGERFS_SOURCE_DIGEST ""
#endif

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pagerfs.store._codec",
    "The store's block codec in C: pread, lz4 and SHA-256 of a block in one GIL-free call.",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__codec(void)
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
#else
    sha256_md = EVP_sha256();
#endif
    if (sha256_md == NULL) {
        PyErr_SetString(PyExc_ImportError, "OpenSSL has no SHA-256");
        return NULL;
    }
    if (pthread_key_create(&scratch_key, free_scratch) != 0) {
        PyErr_SetString(PyExc_ImportError, "pthread_key_create failed");
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    ShortReadError = PyErr_NewExceptionWithDoc(
        "pagerfs.store._codec.ShortReadError",
        "The image file ended before the stored block did.", NULL, NULL);
    DecodeError = PyErr_NewExceptionWithDoc(
        "pagerfs.store._codec.DecodeError",
        "The stored block does not decode to its uncompressed length.", NULL, NULL);
    if (ShortReadError == NULL || DecodeError == NULL
        || PyModule_AddObjectRef(m, "ShortReadError", ShortReadError) < 0
        || PyModule_AddObjectRef(m, "DecodeError", DecodeError) < 0
        || PyModule_AddIntConstant(m, "LZ4_VERSION", LZ4_versionNumber()) < 0
        || PyModule_AddIntConstant(m, "PAGE", PAGE) < 0
        || PyModule_AddStringConstant(m, "SOURCE_DIGEST", PAGERFS_SOURCE_DIGEST) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
