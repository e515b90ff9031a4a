/* collector._metricsjson: a metrics payload, the wire's JSON, straight to line protocol.

   The collector's hot path, one call per metrics message (collector/metrics_in.py).
   Decoding a payload into Python objects (msgspec: about 750 numbers, 50 dicts, 50
   dataclasses a device poll) and formatting those objects again as line protocol was
   over half of a replica's CPU. This reads the payload once and writes the lines as it
   goes: a number's JSON token is its line protocol value (an `i` after an integer), a
   field's name is its key, the tag sets come from the caches lineproto.py keeps.

   It takes only what it is sure of, and says None to anything else, which then takes
   the general path (enoc.wire.decode, then lineproto.metrics_chunk): that path stays
   the reference, names every breach of the contract and writes what this cannot. This
   takes: the members in the order enoc's encoder writes them (top level: samples after
   rtc; a sample: device, address and ts before fields, ifs, bgp, rows, in that order), no
   unknown or repeated member; names of fields in printable ASCII without a backslash,
   comma, equals sign or space (their line protocol form is then their JSON form), other
   than `time`, at most MAX_NAME_BYTES long, no name twice in one set; values that are numbers, integers within int64
   (not -0), floats that are finite with a lower-case exponent if any, and in a row's set
   strings of UTF-8 without escapes or control characters, at most MAX_STRING_BYTES long
   (their line protocol form is then their JSON form); strings for rtc, device
   and address without escapes; site and agent equal to the topic's. JSON's grammar is
   checked as it reads; a UTF-8 or control character fault is left to the general path.

   Tag sets: a device's are found by calling `device_tags(address, device, rtc, site)`
   (lineproto's cache). An interface's identity, its JSON `ifIndex,"name","descr",
   "alias"`, is compared byte for byte with the one at the same position in the last
   poll (`tags.if_shape`: (raw, head, ifIndex) entries); a different one is handed to
   `tags.learn_interface(position, raw)`, which decodes and checks it with msgspec,
   makes its tag set as the Python path does, and returns the entry (None: not valid, the
   general path takes the message). A BGP peer's likewise (`bgp_shape`, `learn_bgp`), and a
   row's, its JSON `"measurement",{tags}` (`row_shape`, `learn_row`, which also holds its
   names to enoc.wire's rules).
   So the bytes of a tag set always come from the Python code, and a string of an
   identity is checked once, when first seen.

   For the recent window it returns, per sample, `(device, (ts, cpu, memory,
   response_ms, index, rates))`: the device fields' values by those names (None when
   absent), the ifIndex tuple (the one of the last poll when they are the same, kept on
   `tags.index`), and each interface's in_bps and out_bps as 32-bit floats (NaN when
   absent), what `array("f", ...)` makes of them.

   Only the CPython C API. The output is one bytes object, grown by doubling, written
   through checked reservations. No Python code runs between a borrowed reference and
   its use. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if LLONG_MAX != 9223372036854775807LL || LLONG_MIN != (-9223372036854775807LL - 1)
#error "long long must be InfluxDB's int64"
#endif

/* Bumped when the function's contract changes: Python uses only the version it knows. */
#define METRICSJSON_VERSION 2

/* The longest field name written here: lineproto.MAX_TAG_BYTES, beyond which the general
   path cuts it (sanitise_field_key). */
#define MAX_NAME_BYTES 1024
/* The longest string value written here: lineproto.MAX_STRING_BYTES, beyond which the
   general path cuts it (sanitise_string_field). */
#define MAX_STRING_BYTES 65536
/* Names of one field set kept for the duplicate check; a set with more goes elsewhere. */
#define MAX_KEYS 64
/* Bytes of names remembered per kind of set for the duplicate check. */
#define SHAPE_BYTES 2048

enum { FALLBACK = 0, DONE = 1, FAILED = -1, MORE = 2 };
#define TRY(expr)              \
    do {                       \
        int try_ = (expr);     \
        if (try_ != DONE) {    \
            return try_;       \
        }                      \
    } while (0)

static PyObject *str_device_line, *str_if_shape, *str_bgp_shape, *str_row_shape, *str_index;
static PyObject *str_learn_interface, *str_learn_bgp, *str_learn_row;

/* ------------------------------------------------------------------ reading */

typedef struct {
    const char *s;
    Py_ssize_t n, i;
    PyObject *out; /* the lines: a bytes object, resized as it fills */
    Py_ssize_t at, cap;
    Py_ssize_t lines;
} Parser;

/* A bytes object's buffer always ends in a NUL after its last byte (the C API documents
   it): the scanning loops below stop at it without a bounds check, since no class of
   characters they accept holds it. */
static inline void
skip_ws(Parser *p)
{
    if ((unsigned char)p->s[p->i] > ' ') {
        return; /* compact JSON: the usual case */
    }
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
            return;
        }
        p->i++;
    }
}

/* After white space, `c`: consumed. Else FALLBACK. */
static inline int
expect(Parser *p, char c)
{
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == c) {
        p->i++;
        return DONE;
    }
    return FALLBACK;
}

/* `open` at the cursor (after white space), consumed: MORE when elements follow, DONE
   when `close` follows at once (consumed too), else FALLBACK. */
static inline int
opening(Parser *p, char open, char close)
{
    TRY(expect(p, open));
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == close) {
        p->i++;
        return DONE;
    }
    return MORE;
}

/* After an element or a member: MORE on a comma, DONE on `close` (either consumed), else
   FALLBACK. */
static inline int
next_or_end(Parser *p, char close)
{
    skip_ws(p);
    if (p->i < p->n) {
        char c = p->s[p->i];
        if (c == ',' || c == close) {
            p->i++;
            return c == ',' ? MORE : DONE;
        }
    }
    return FALLBACK;
}

/* A JSON string at the cursor (after white space): its content's span. `escaped` tells
   whether it has a backslash. A control character (which JSON forbids) or no end:
   FALLBACK. UTF-8 is not checked here. */
static int
scan_string(Parser *p, Py_ssize_t *start, Py_ssize_t *end, int *escaped)
{
    TRY(expect(p, '"'));
    const unsigned char *s = (const unsigned char *)p->s;
    Py_ssize_t i = p->i, n = p->n;
    *start = i;
    *escaped = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c == '"') {
            *end = i;
            p->i = i + 1;
            return DONE;
        }
        if (c < 0x20) {
            return FALLBACK;
        }
        if (c == '\\') {
            *escaped = 1;
            i += 2;
            continue;
        }
        i++;
    }
    return FALLBACK;
}

/* A string without escapes, decoded (a new reference); invalid UTF-8 or an escape:
   FALLBACK. */
static int
string_value(Parser *p, PyObject **out)
{
    Py_ssize_t start, end;
    int escaped;
    TRY(scan_string(p, &start, &end, &escaped));
    if (escaped) {
        return FALLBACK;
    }
    *out = PyUnicode_DecodeUTF8(p->s + start, end - start, "strict");
    if (*out == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            return FAILED;
        }
        PyErr_Clear();
        return FALLBACK;
    }
    return DONE;
}

/* Whether the string at the cursor is exactly `want` (UTF-8), consumed. */
static int
string_is(Parser *p, const char *want, Py_ssize_t want_len)
{
    Py_ssize_t start, end;
    int escaped;
    TRY(scan_string(p, &start, &end, &escaped));
    if (escaped || end - start != want_len || memcmp(p->s + start, want, (size_t)want_len)) {
        return FALLBACK;
    }
    return DONE;
}

/* ------------------------------------------------------------------ numbers */

typedef struct {
    Py_ssize_t start, end;
    int negative, is_float, exponent;
    Py_ssize_t int_digits;  /* digits before the point */
    Py_ssize_t frac_digits; /* digits after it */
} Number;

static inline int
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Where the run of digits from `i` ends: eight bytes at a time where the payload has
   them (a byte is a digit when it is '0' ^ x with x < 10), then one by one up to the
   first that is not one (the NUL at the end is not). */
static inline Py_ssize_t
skip_digits(const Parser *p, Py_ssize_t i)
{
#if PY_LITTLE_ENDIAN
    while (i + 8 <= p->n) {
        uint64_t x;
        memcpy(&x, p->s + i, 8);
        x ^= 0x3030303030303030ULL;
        uint64_t not_digit =
            (((x & 0x7F7F7F7F7F7F7F7FULL) + 0x7676767676767676ULL) | x) & 0x8080808080808080ULL;
        if (not_digit) {
            return i + (__builtin_ctzll(not_digit) >> 3);
        }
        i += 8;
    }
#endif
    while (is_digit(p->s[i])) {
        i++;
    }
    return i;
}

/* m * 10**count + the value of the `count` digits at `d` (m stays below 2**64: at most
   19 digits in all); eight at a time as one 64-bit word where there are eight. */
static inline uint64_t
add_digits(uint64_t m, const char *d, Py_ssize_t count)
{
#if PY_LITTLE_ENDIAN
    for (; count >= 8; count -= 8, d += 8) {
        uint64_t v;
        memcpy(&v, d, 8);
        v = ((v & 0x0F0F0F0F0F0F0F0FULL) * 2561) >> 8;
        v = ((v & 0x00FF00FF00FF00FFULL) * 6553601) >> 16;
        v = ((v & 0x0000FFFF0000FFFFULL) * 42949672960001ULL) >> 32;
        m = m * 100000000 + (uint32_t)v;
    }
#endif
    for (; count > 0; count--, d++) {
        m = m * 10 + (uint64_t)(*d - '0');
    }
    return m;
}

/* A JSON number at the cursor (after white space), by its grammar; anything else is
   FALLBACK (true, null, a string...), and so is an upper-case exponent, valid JSON that
   neither Python's nor msgspec's encoder writes. */
static inline int
scan_number(Parser *p, Number *num)
{
    skip_ws(p);
    const char *s = p->s;
    Py_ssize_t i = p->i;
    num->start = i;
    num->negative = s[i] == '-';
    num->is_float = num->exponent = 0;
    num->frac_digits = 0;
    i += num->negative;
    if (s[i] == '0') {
        i++;
    }
    else if (s[i] >= '1' && s[i] <= '9') {
        i = skip_digits(p, i + 1);
    }
    else {
        return FALLBACK;
    }
    num->int_digits = i - num->start - num->negative;
    if (s[i] == '.') {
        i++;
        if (!is_digit(s[i])) {
            return FALLBACK;
        }
        Py_ssize_t first = i;
        i = skip_digits(p, i + 1);
        num->frac_digits = i - first;
        num->is_float = 1;
    }
    if (s[i] == 'e') {
        i++;
        i += s[i] == '+' || s[i] == '-';
        if (!is_digit(s[i])) {
            return FALLBACK;
        }
        i = skip_digits(p, i + 1);
        num->is_float = num->exponent = 1;
    }
    else if (s[i] == 'E') {
        return FALLBACK;
    }
    num->end = i;
    p->i = i;
    return DONE;
}

/* Whether an integer token is within int64 and not -0 (0 on the general path). */
static inline int
int_fits(const Parser *p, const Number *num)
{
    const char *digits = p->s + num->start + num->negative;
    Py_ssize_t count = num->int_digits;
    if (num->is_float || count > 19) {
        return 0;
    }
    if (count == 19) {
        return memcmp(digits, num->negative ? "9223372036854775808" : "9223372036854775807",
                      19) <= 0;
    }
    return !(num->negative && count == 1 && digits[0] == '0');
}

/* An integer token's value: DONE where it fits (`int_fits`), else FALLBACK. */
static int
int_value(const Parser *p, const Number *num, long long *out)
{
    if (!int_fits(p, num)) {
        return FALLBACK;
    }
    uint64_t v = add_digits(0, p->s + num->start + num->negative, num->int_digits);
    if (num->negative) {
        *out = v == 9223372036854775808ULL ? LLONG_MIN : -(long long)v;
    }
    else {
        *out = (long long)v;
    }
    return DONE;
}

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                               1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

#if defined(__SIZEOF_INT128__) && FLT_EVAL_METHOD == 0
#define EISEL_LEMIRE 1
/* The Eisel-Lemire algorithm (Lemire, "Number Parsing at a Gigabyte per Second",
   Software: Practice and Experience 51(8), 2021; as fast_float, Go and Rust do it): the
   nearest double to w * 10**q for w < 2**64, from w times a 128-bit approximation of
   5**q. POW5[q - POW5_MIN] holds that approximation as the paper defines it: for q >= 0
   the 128 leading bits of 5**q; for q < 0, with z the bit length of 5**-q, 2**b // 5**-q
   + 1 with b = z + 127 when -q <= 27, else b = 2z + 128 and that cut to its 128 leading
   bits. Computed exactly at import (`powers_of_five`), checked against the paper's
   definition by the tests. */
#define POW5_MIN (-342)
#define POW5_MAX 308
static uint64_t POW5[POW5_MAX - POW5_MIN + 1][2]; /* {high, low} */

/* The 64 bits of the little-endian number `x` (`n` limbs) from bit `start` up; bits
   outside it are 0. */
static uint64_t
bits_at(const uint64_t *x, int n, int start)
{
    if (start <= -64 || start >= 64 * n) {
        return 0;
    }
    if (start < 0) {
        return x[0] << -start;
    }
    int word = start / 64, bit = start % 64;
    uint64_t v = x[word] >> bit;
    if (bit > 0 && word + 1 < n) {
        v |= x[word + 1] << (64 - bit);
    }
    return v;
}

/* The 128 leading bits of `x` (not 0; shifted up when it has fewer) into `entry`. */
static void
leading_128(const uint64_t *x, int n, uint64_t *entry)
{
    int word = n - 1;
    while (x[word] == 0) {
        word--;
    }
    int top = 64 * word + 63 - __builtin_clzll(x[word]);
    entry[0] = bits_at(x, n, top - 63);
    entry[1] = bits_at(x, n, top - 127);
}

#define BIG 29 /* limbs: 2**1728 (for b up to 2 * 795 + 128 = 1718) and 5**308 fit */

static void
powers_of_five(void)
{
    uint64_t x[BIG] = {1};
    for (int q = 0; q <= POW5_MAX; q++) { /* x = 5**q */
        if (q > 0) {
            unsigned __int128 carry = 0;
            for (int k = 0; k < BIG; k++) {
                carry += (unsigned __int128)x[k] * 5;
                x[k] = (uint64_t)carry;
                carry >>= 64;
            }
        }
        leading_128(x, BIG, POW5[q - POW5_MIN]);
    }
    const int N = 1728;
    uint64_t d[BIG] = {0}, y[BIG];
    d[N / 64] = (uint64_t)1 << (N % 64);
    for (int k = 1; k <= -POW5_MIN; k++) { /* d = 2**N // 5**k */
        unsigned __int128 rest = 0;
        for (int i = BIG - 1; i >= 0; i--) {
            rest = (rest << 64) | d[i];
            d[i] = (uint64_t)(rest / 5);
            rest %= 5;
        }
        int z = ((k * 1217359) >> 19) + 1; /* the bit length of 5**k */
        int b = k <= 27 ? z + 127 : 2 * z + 128;
        /* y = 2**b // 5**k + 1 = (d >> (N - b)) + 1 */
        for (int i = 0; i < BIG; i++) {
            y[i] = bits_at(d, BIG, N - b + 64 * i);
        }
        for (int i = 0; i < BIG && ++y[i] == 0; i++) {
        }
        leading_128(y, BIG, POW5[-k - POW5_MIN]);
    }
}

/* The nearest double to w * 10**q, w having at most 19 digits: DONE, or FALLBACK where
   this does not decide (a subnormal, an exponent out of its range). */
static int
eisel_lemire(uint64_t w, long q, double *out)
{
    if (w == 0 || q < POW5_MIN || q > POW5_MAX) {
        return FALLBACK;
    }
    int lz = __builtin_clzll(w);
    w <<= lz;
    const uint64_t *pow5 = POW5[q - POW5_MIN];
    unsigned __int128 first = (unsigned __int128)w * pow5[0];
    uint64_t high = (uint64_t)(first >> 64), low = (uint64_t)first;
    const uint64_t mask = UINT64_MAX >> 55; /* 52 bits, the hidden one, and two to round */
    if ((high & mask) == mask) {
        uint64_t second = (uint64_t)(((unsigned __int128)w * pow5[1]) >> 64);
        low += second;
        if (second > low) {
            high++;
        }
    }
    if (low == UINT64_MAX && (q < -27 || q > 55)) {
        return FALLBACK; /* the approximation may be one short (the paper's section 8) */
    }
    int upperbit = (int)(high >> 63);
    int shift = upperbit + 64 - 52 - 3;
    uint64_t mantissa = high >> shift;
    long power2 = (((152170 + 65536) * q) >> 16) + 63 + upperbit - lz + 1023;
    if (power2 <= 0) {
        return FALLBACK; /* subnormal */
    }
    if (low <= 1 && q >= -4 && q <= 23 && (mantissa & 3) == 1 &&
        (mantissa << shift) == high) {
        mantissa &= ~(uint64_t)1; /* exactly halfway: to even, down */
    }
    mantissa += mantissa & 1;
    mantissa >>= 1;
    if (mantissa >= (uint64_t)2 << 52) {
        mantissa = (uint64_t)1 << 52;
        power2++;
    }
    mantissa &= ~((uint64_t)1 << 52);
    uint64_t bits = power2 >= 0x7FF ? (uint64_t)0x7FF << 52 : mantissa | (uint64_t)power2 << 52;
    memcpy(out, &bits, sizeof(bits));
    return DONE;
}
#endif

/* A number token's value as the nearest double, as a JSON decoder reads it (inf when it
   is beyond a double's range): from its digits by Clinger's fast path where that is exact
   (at most 15 significant digits and a power of ten of at most 22: one correctly rounded
   product or quotient of two exact doubles), else by Eisel-Lemire (at most 19), else by
   Python's own correctly rounded conversion. FAILED only on an error from Python. */
static int
number_value(const Parser *p, const Number *num, double *out)
{
    if (!num->is_float) {
        long long v;
        if (int_value(p, num, &v) == DONE) {
            *out = (double)v; /* correctly rounded, as float(int) */
            return DONE;
        }
    }
#if FLT_EVAL_METHOD == 0
    else {
        const char *s = p->s;
        const char *digits = s + num->start + num->negative, *fraction = digits + num->int_digits + 1;
        Py_ssize_t int_digits = num->int_digits, frac_digits = num->frac_digits;
        if (int_digits == 1 && digits[0] == '0') { /* 0.000ddd: the zeros are not significant */
            int_digits = 0;
            for (; frac_digits > 0 && *fraction == '0'; frac_digits--) {
                fraction++;
            }
        }
        int fast = int_digits + frac_digits <= 19;
        Py_ssize_t significant = int_digits + frac_digits;
        uint64_t m = 0;
        if (fast) {
            m = add_digits(add_digits(0, digits, int_digits), fraction, frac_digits);
        }
        long exp10 = 0;
        if (fast && num->exponent) {
            Py_ssize_t k = num->start + num->negative + num->int_digits +
                           (num->frac_digits ? num->frac_digits + 1 : 0) + 1; /* after the e */
            int negative = 0;
            if (s[k] == '+' || s[k] == '-') {
                negative = s[k] == '-';
                k++;
            }
            for (; k < num->end && fast; k++) {
                exp10 = exp10 * 10 + (s[k] - '0');
                if (exp10 > 400) {
                    fast = 0;
                }
            }
            exp10 = negative ? -exp10 : exp10;
        }
        exp10 -= (long)num->frac_digits;
        if (fast && m == 0) {
            *out = num->negative ? -0.0 : 0.0;
            return DONE;
        }
        if (fast && significant <= 15 && exp10 >= -22 && exp10 <= 22) {
            double v = (double)m; /* exact: m < 10**15 < 2**53 */
            v = exp10 >= 0 ? v * POW10[exp10] : v / POW10[-exp10];
            *out = num->negative ? -v : v;
            return DONE;
        }
#ifdef EISEL_LEMIRE
        if (fast && eisel_lemire(m, exp10, out) == DONE) {
            *out = num->negative ? -*out : *out;
            return DONE;
        }
#endif
    }
#endif
    /* the general conversion: a NUL-terminated copy for PyOS_string_to_double */
    char small[64];
    Py_ssize_t len = num->end - num->start;
    char *copy = len < (Py_ssize_t)sizeof(small) ? small : PyMem_Malloc((size_t)len + 1);
    if (copy == NULL) {
        PyErr_NoMemory();
        return FAILED;
    }
    memcpy(copy, p->s + num->start, (size_t)len);
    copy[len] = '\0';
    char *end = NULL;
    double v = PyOS_string_to_double(copy, &end, NULL); /* +-inf beyond a double */
    int whole = end == copy + len;
    if (copy != small) {
        PyMem_Free(copy);
    }
    if (v == -1.0 && PyErr_Occurred()) {
        return FAILED;
    }
    if (!whole) {
        PyErr_SetString(PyExc_SystemError, "_metricsjson: a number token not read whole");
        return FAILED;
    }
    *out = v;
    return DONE;
}

/* ------------------------------------------------------------------ writing */

static int
reserve(Parser *p, Py_ssize_t extra)
{
    if (extra <= p->cap - p->at) {
        return DONE;
    }
    if (extra > PY_SSIZE_T_MAX / 2 - p->at) {
        PyErr_SetString(PyExc_OverflowError, "_metricsjson: output too large");
        return FAILED;
    }
    Py_ssize_t cap = p->cap * 2 > p->at + extra ? p->cap * 2 : p->at + extra;
    if (_PyBytes_Resize(&p->out, cap) < 0) { /* p->out is NULL then */
        return FAILED;
    }
    p->cap = cap;
    return DONE;
}

static inline char *
cursor(Parser *p)
{
    return PyBytes_AS_STRING(p->out) + p->at;
}

static int
put(Parser *p, const char *src, Py_ssize_t len)
{
    TRY(reserve(p, len));
    memcpy(cursor(p), src, (size_t)len);
    p->at += len;
    return DONE;
}

static int
put_bytes(Parser *p, PyObject *bytes)
{
    if (!PyBytes_CheckExact(bytes)) {
        PyErr_SetString(PyExc_TypeError, "_metricsjson: a tag set must be bytes");
        return FAILED;
    }
    return put(p, PyBytes_AS_STRING(bytes), PyBytes_GET_SIZE(bytes));
}

/* ------------------------------------------------------------------ field sets */

/* What a field's name may hold for its JSON form to be its line protocol form: printable
   ASCII but for the quote, backslash, comma, equals sign and space. */
static unsigned char NAME_CHAR[256];

typedef struct {
    Py_ssize_t count; /* -1: nothing remembered */
    Py_ssize_t len[MAX_KEYS], off[MAX_KEYS];
    char bytes[SHAPE_BYTES + 8]; /* 8 to spare: names_at reads 8 bytes at a time */
} Shape;

/* The names of the last set seen of each kind found to hold no name twice: most sets
   are the same names in the same order, so comparing with it replaces the pairwise
   check. Kept across calls; written only where no Python code can run. */
enum { DEVICE_SET, INTERFACE_SET, BGP_SET, ROW_SET, SET_KINDS };
static Shape shapes[SET_KINDS];

/* Whether the `count` names hold none twice; `same`: they are the first of `shape`'s, in
   its order (a part of a set with no name twice has none). */
static int
distinct(const char *s, const Py_ssize_t *start, const Py_ssize_t *len, Py_ssize_t count,
         int same, Shape *shape)
{
    if (same) {
        return 1;
    }
    for (Py_ssize_t a = 1; a < count; a++) {
        for (Py_ssize_t b = 0; b < a; b++) {
            if (len[a] == len[b] && memcmp(s + start[a], s + start[b], (size_t)len[a]) == 0) {
                return 0;
            }
        }
    }
    Py_ssize_t used = 0;
    for (Py_ssize_t k = 0; k < count; k++) {
        if (len[k] > SHAPE_BYTES - used) {
            shape->count = -1;
            return 1;
        }
        shape->off[k] = used;
        shape->len[k] = len[k];
        memcpy(shape->bytes + used, s + start[k], (size_t)len[k]);
        used += len[k];
    }
    shape->count = count;
    return 1;
}

/* Values a set gives the recent window: an interface's rates, a device's three series. */
typedef struct {
    double in_bps, out_bps;
    PyObject *cpu, *memory, *response_ms; /* new references, or NULL */
} Taken;

static void
taken_clear(Taken *t)
{
    Py_CLEAR(t->cpu);
    Py_CLEAR(t->memory);
    Py_CLEAR(t->response_ms);
}

static inline int
name_is(const char *s, Py_ssize_t start, Py_ssize_t len, const char *name, Py_ssize_t name_len)
{
    return len == name_len && memcmp(s + start, name, (size_t)name_len) == 0;
}

/* A value for the recent window: the number as Python has it (a new reference). */
static int
number_object(const Parser *p, const Number *num, PyObject **slot)
{
    PyObject *value;
    if (num->is_float) {
        double v;
        TRY(number_value(p, num, &v));
        value = PyFloat_FromDouble(v);
    }
    else {
        long long v;
        TRY(int_value(p, num, &v));
        value = PyLong_FromLongLong(v);
    }
    if (value == NULL) {
        return FAILED;
    }
    Py_XSETREF(*slot, value);
    return DONE;
}

/* Whether the payload has, at `at`, the name `name` (`len` bytes, from a shape, whose
   buffer has 8 bytes to spare) and its closing quote: compared 8 bytes at a time where
   the payload has them, else byte by byte. */
static inline int
name_at(const Parser *p, Py_ssize_t at, const char *name, Py_ssize_t len)
{
    const char *s = p->s + at;
    if (at + len + 8 <= p->n) {
        Py_ssize_t j = 0;
        for (; j + 8 <= len; j += 8) {
            uint64_t x, y;
            memcpy(&x, s + j, 8);
            memcpy(&y, name + j, 8);
            if (x != y) {
                return 0;
            }
        }
        uint64_t x, y;
        memcpy(&x, s + j, 8);
        memcpy(&y, name + j, 8);
        /* the rest of the name, then the quote; the bytes after those not compared */
        Py_ssize_t rest = len - j;
        unsigned char *b = (unsigned char *)&y;
        b[rest] = '"';
        uint64_t keep = rest == 7 ? UINT64_MAX : ((uint64_t)1 << (8 * (rest + 1))) - 1;
        uint64_t diff = x ^ y;
#if PY_BIG_ENDIAN
        keep = rest == 7 ? UINT64_MAX : ~(UINT64_MAX >> (8 * (rest + 1)));
#endif
        return (diff & keep) == 0;
    }
    return at + len < p->n && memcmp(s, name, (size_t)len) == 0 && s[len] == '"';
}

/* `len` bytes of the payload at `from` to the output at `to`, which has 16 bytes to spare:
   short runs as one fixed 16-byte move where the payload has 16 bytes there. */
static inline void
copy_short(char *to, const Parser *p, Py_ssize_t from, Py_ssize_t len)
{
    if (len <= 16 && from + 16 <= p->n) {
        memcpy(to, p->s + from, 16);
    }
    else {
        memcpy(to, p->s + from, (size_t)len);
    }
}

/* A string field's value at the cursor, written after its name (`len` bytes of the payload
   at `name`; the set's `k`th): `,name="value"`. One with an escape, a control character
   (U+007F-U+009F, which sanitise_string_field makes spaces), not UTF-8, or too long:
   FALLBACK. */
static int
string_field(Parser *p, Py_ssize_t name, Py_ssize_t len, Py_ssize_t k)
{
    Py_ssize_t start, end;
    int escaped;
    TRY(scan_string(p, &start, &end, &escaped));
    if (escaped || end - start > MAX_STRING_BYTES) {
        return FALLBACK;
    }
    const unsigned char *u = (const unsigned char *)p->s;
    int ascii = 1;
    for (Py_ssize_t i = start; i < end; i++) {
        /* U+0080-U+009F: 0xC2 (never a continuation byte) then 0x80-0x9F */
        if (u[i] == 0x7f || (u[i] == 0xc2 && u[i + 1] <= 0x9f)) {
            return FALLBACK;
        }
        ascii &= u[i] < 0x80;
    }
    if (!ascii) {
        PyObject *text = PyUnicode_DecodeUTF8(p->s + start, end - start, "strict");
        if (text == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                return FAILED;
            }
            PyErr_Clear();
            return FALLBACK;
        }
        Py_DECREF(text);
    }
    TRY(reserve(p, len + (end - start) + 4));
    char *o = cursor(p);
    *o = ',';
    o += k > 0;
    memcpy(o, p->s + name, (size_t)len);
    o += len;
    *o++ = '=';
    *o++ = '"';
    memcpy(o, p->s + start, (size_t)(end - start));
    o += end - start;
    *o++ = '"';
    p->at = o - PyBytes_AS_STRING(p->out);
    return DONE;
}

/* A field set `{"name": number, ...}` at the cursor, written as `name=value,...`;
   `*count` is how many fields it has. */
static int
field_set(Parser *p, int kind, Taken *taken, Py_ssize_t *count)
{
    Py_ssize_t start[MAX_KEYS], len[MAX_KEYS];
    Py_ssize_t k = 0;
    Shape *shape = &shapes[kind];
    int same = 1;
    *count = 0;
    TRY(expect(p, '{'));
    skip_ws(p);
    if (p->s[p->i] == '}') {
        p->i++;
        return DONE;
    }
    const char *s = p->s;
    for (;; k++) {
        if (k == MAX_KEYS) {
            return FALLBACK;
        }
        skip_ws(p);
        Py_ssize_t a = p->i + 1, i = a;
        if (s[p->i] != '"') {
            return FALLBACK;
        }
        /* the name the last such set had here (checked when remembered), else each of its
           characters */
        same = same && k < shape->count && name_at(p, a, shape->bytes + shape->off[k], shape->len[k]);
        if (same) {
            i = a + shape->len[k];
        }
        else {
            while (NAME_CHAR[(unsigned char)s[i]]) {
                i++;
            }
            if (i == a || s[i] != '"' || i - a > MAX_NAME_BYTES
                || (i - a == 4 && memcmp(s + a, "time", 4) == 0)) {
                /* empty, a character this does not write as it is, too long, or the name
                   InfluxDB 1.x refuses (lineproto.sanitise_field_key renames it) */
                return FALLBACK;
            }
        }
        start[k] = a;
        len[k] = i - a;
        p->i = i + 1;
        if (s[p->i] == ':') {
            p->i++;
        }
        else {
            TRY(expect(p, ':'));
        }
        if (kind == ROW_SET) {
            skip_ws(p);
            if (s[p->i] == '"') {
                TRY(string_field(p, a, len[k], k));
                goto next;
            }
        }
        Number num;
        TRY(scan_number(p, &num));
        if (num.is_float) {
            /* a float that may be beyond a double (JSON's grammar bounds the others) */
            if (num.exponent || num.int_digits > 300) {
                double v;
                TRY(number_value(p, &num, &v));
                if (!isfinite(v)) {
                    return FALLBACK;
                }
            }
        }
        else if (!int_fits(p, &num)) {
            return FALLBACK;
        }
        Py_ssize_t token = num.end - num.start;
        TRY(reserve(p, len[k] + token + 3 + 16));
        char *o = cursor(p);
        *o = ',';
        o += k > 0;
        copy_short(o, p, a, len[k]);
        o += len[k];
        *o++ = '=';
        copy_short(o, p, num.start, token);
        o += token;
        *o = 'i';
        o += !num.is_float;
        p->at = o - PyBytes_AS_STRING(p->out);
        if (kind == INTERFACE_SET) {
            double *rate = name_is(s, a, len[k], "in_bps", 6)    ? &taken->in_bps
                           : name_is(s, a, len[k], "out_bps", 7) ? &taken->out_bps
                                                                  : NULL;
            if (rate != NULL) {
                TRY(number_value(p, &num, rate));
            }
        }
        else if (kind == DEVICE_SET) {
            PyObject **slot = name_is(s, a, len[k], "cpu", 3)            ? &taken->cpu
                              : name_is(s, a, len[k], "memory", 6)       ? &taken->memory
                              : name_is(s, a, len[k], "response_ms", 11) ? &taken->response_ms
                                                                         : NULL;
            if (slot != NULL) {
                TRY(number_object(p, &num, slot));
            }
        }
    next:;
        int more = next_or_end(p, '}');
        if (more != MORE) {
            TRY(more);
            break;
        }
    }
    *count = k + 1;
    return distinct(s, start, len, *count, same, shape) ? DONE : FALLBACK;
}

/* One line: `head` (written already, at `line_start`), the set, the stamp; no line when the
   set is empty. */
static int
finish_line(Parser *p, Py_ssize_t line_start, Py_ssize_t count, const char *stamp,
            Py_ssize_t stamp_len)
{
    if (count == 0) {
        p->at = line_start;
        return DONE;
    }
    TRY(put(p, stamp, stamp_len));
    p->lines++;
    return DONE;
}

/* ------------------------------------------------------------------ samples */

typedef struct {
    PyObject *tags;  /* lineproto's _DeviceTags of the sample */
    char stamp[32];  /* " <ms>\n" */
    Py_ssize_t stamp_len;
    PyObject **ids;  /* each interface's ifIndex (new references) */
    float *rates;    /* each interface's in_bps and out_bps */
    Py_ssize_t count, capacity;
} Sample;

static void
sample_free(Sample *m)
{
    Py_CLEAR(m->tags);
    for (Py_ssize_t k = 0; k < m->count; k++) {
        Py_DECREF(m->ids[k]);
    }
    PyMem_Free(m->ids);
    PyMem_Free(m->rates);
    m->ids = NULL;
    m->rates = NULL;
    m->count = m->capacity = 0;
}

static int
sample_push(Sample *m, PyObject *if_index, double in_bps, double out_bps)
{
    if (m->count == m->capacity) {
        Py_ssize_t capacity = m->capacity ? 2 * m->capacity : 64;
        PyObject **ids = PyMem_Realloc(m->ids, (size_t)capacity * sizeof(PyObject *));
        if (ids == NULL) {
            PyErr_NoMemory();
            return FAILED;
        }
        m->ids = ids;
        float *rates = PyMem_Realloc(m->rates, (size_t)capacity * 2 * sizeof(float));
        if (rates == NULL) {
            PyErr_NoMemory();
            return FAILED;
        }
        m->rates = rates;
        m->capacity = capacity;
    }
    m->ids[m->count] = Py_NewRef(if_index);
    m->rates[2 * m->count] = (float)in_bps; /* as array("f") stores a double */
    m->rates[2 * m->count + 1] = (float)out_bps;
    m->count++;
    return DONE;
}

/* The entry at `position` of `shape` (a tags' shape list, held by the caller) whose raw
   identity is `s[start:end]` (a new reference), learned through `tags.<learn>` when it
   is not that. `learn` changes the list in place; were it to replace it, the old one
   would only miss more (every entry in either was learned). */
static int
identity(Parser *p, PyObject *tags, PyObject *shape, PyObject *learn, Py_ssize_t position,
         Py_ssize_t start, Py_ssize_t end, Py_ssize_t entry_len, PyObject **entry)
{
    Py_ssize_t len = end - start;
    if (PyList_CheckExact(shape) && position < PyList_GET_SIZE(shape)) {
        PyObject *known = PyList_GET_ITEM(shape, position);
        if (PyTuple_CheckExact(known) && PyTuple_GET_SIZE(known) == entry_len) {
            PyObject *raw = PyTuple_GET_ITEM(known, 0);
            if (PyBytes_CheckExact(raw) && PyBytes_GET_SIZE(raw) == len &&
                memcmp(PyBytes_AS_STRING(raw), p->s + start, (size_t)len) == 0) {
                *entry = Py_NewRef(known);
                return DONE;
            }
        }
    }
    PyObject *raw = PyBytes_FromStringAndSize(p->s + start, len);
    PyObject *where = PyLong_FromSsize_t(position);
    PyObject *learned = NULL;
    if (raw != NULL && where != NULL) {
        learned = PyObject_CallMethodObjArgs(tags, learn, where, raw, NULL);
    }
    Py_XDECREF(raw);
    Py_XDECREF(where);
    if (learned == NULL) {
        return FAILED;
    }
    if (learned == Py_None) {
        Py_DECREF(learned);
        return FALLBACK; /* not valid: the general path says why */
    }
    if (!PyTuple_CheckExact(learned) || PyTuple_GET_SIZE(learned) != entry_len ||
        !PyBytes_CheckExact(PyTuple_GET_ITEM(learned, 1))) {
        Py_DECREF(learned);
        PyErr_SetString(PyExc_TypeError, "_metricsjson: learn_* must return an entry or None");
        return FAILED;
    }
    *entry = learned;
    return DONE;
}

/* A row's tags at the cursor, `{"key": "value", ...}`: scanned over (learn_row reads them). */
static int
tag_object(Parser *p)
{
    int more = opening(p, '{', '}');
    while (more == MORE) {
        Py_ssize_t a, b;
        int escaped;
        TRY(scan_string(p, &a, &b, &escaped));
        TRY(expect(p, ':'));
        TRY(scan_string(p, &a, &b, &escaped));
        more = next_or_end(p, '}');
    }
    return more;
}

/* The rows of `"ifs": [[ifIndex, "name", "descr", "alias", {fields}], ...]` (kind
   INTERFACE_SET), of `"bgp": [["peer", {fields}], ...]` (BGP_SET) or of `"rows":
   [["measurement", {tags}, {fields}], ...]` (ROW_SET): a line each (none for an empty set),
   its tag set found by the row's identity (all before the fields) in `shape`, learned
   through `tags.<learn>`; an interface also goes to the recent window. */
static int
rows(Parser *p, Sample *m, int kind, PyObject *shape, PyObject *learn)
{
    int more = opening(p, '[', ']');
    for (Py_ssize_t position = 0; more == MORE; position++) {
        TRY(expect(p, '['));
        skip_ws(p);
        Py_ssize_t start = p->i, a, b;
        int escaped;
        if (kind == INTERFACE_SET) { /* the ifIndex, then name, descr and alias */
            Number num;
            TRY(scan_number(p, &num));
            if (num.is_float) {
                return FALLBACK;
            }
            for (int k = 0; k < 3; k++) {
                TRY(expect(p, ','));
                TRY(scan_string(p, &a, &b, &escaped));
            }
        }
        else { /* the peer; a row's measurement, then its tags */
            TRY(scan_string(p, &a, &b, &escaped));
            if (kind == ROW_SET) {
                TRY(expect(p, ','));
                TRY(tag_object(p));
            }
        }
        Py_ssize_t end = p->i;
        TRY(expect(p, ','));
        PyObject *entry;
        Py_ssize_t entry_len = kind == INTERFACE_SET ? 3 : 2;
        TRY(identity(p, m->tags, shape, learn, position, start, end, entry_len, &entry));
        Py_ssize_t line_start = p->at, count;
        Taken taken = {Py_NAN, Py_NAN, NULL, NULL, NULL};
        int done = put_bytes(p, PyTuple_GET_ITEM(entry, 1));
        if (done == DONE) {
            done = field_set(p, kind, &taken, &count);
        }
        if (done == DONE) {
            done = finish_line(p, line_start, count, m->stamp, m->stamp_len);
        }
        if (done == DONE && kind == INTERFACE_SET) {
            done = sample_push(m, PyTuple_GET_ITEM(entry, 2), taken.in_bps, taken.out_bps);
        }
        Py_DECREF(entry);
        TRY(done);
        TRY(expect(p, ']'));
        more = next_or_end(p, ']');
    }
    return more;
}

/* The ifIndex tuple of the sample: the one kept on the tags when it holds the same
   objects, else a new one, kept there for the next poll. A new reference. */
static PyObject *
index_of(Sample *m)
{
    PyObject *kept = PyObject_GetAttr(m->tags, str_index);
    if (kept == NULL) {
        return NULL;
    }
    if (PyTuple_CheckExact(kept) && PyTuple_GET_SIZE(kept) == m->count) {
        Py_ssize_t k = 0;
        while (k < m->count && PyTuple_GET_ITEM(kept, k) == m->ids[k]) {
            k++;
        }
        if (k == m->count) {
            return kept;
        }
    }
    Py_DECREF(kept);
    PyObject *index = PyTuple_New(m->count);
    if (index == NULL) {
        return NULL;
    }
    for (Py_ssize_t k = 0; k < m->count; k++) {
        PyTuple_SET_ITEM(index, k, Py_NewRef(m->ids[k]));
    }
    if (PyObject_SetAttr(m->tags, str_index, index) < 0) {
        Py_DECREF(index);
        return NULL;
    }
    return index;
}

enum { S_DEVICE = 1, S_ADDRESS = 2, S_TS = 4 };

typedef struct {
    PyObject *site, *rtc, *device_tags, *learn_interface, *learn_bgp, *learn_row;
} Context;

/* One sample object; its poll for the recent window goes on `polls`. */
static int
sample(Parser *p, const Context *ctx, PyObject *polls)
{
    PyObject *device = NULL, *address = NULL, *ts_object = NULL, *index = NULL;
    PyObject *rates = NULL, *poll = NULL, *pair = NULL;
    Sample m = {0};
    Taken taken = {Py_NAN, Py_NAN, NULL, NULL, NULL};
    double ts = 0;
    int seen = 0, stage = 0, result, device_fields = 0;
    const char *s = p->s;
#define STEP(expr)               \
    do {                         \
        result = (expr);         \
        if (result != DONE) {    \
            goto done;           \
        }                        \
    } while (0)
#define NOT_FOR_US()             \
    do {                         \
        result = FALLBACK;       \
        goto done;               \
    } while (0)
    int more = opening(p, '{', '}');
    for (; more == MORE; more = next_or_end(p, '}')) {
        Py_ssize_t a, b;
        int escaped;
        STEP(scan_string(p, &a, &b, &escaped));
        STEP(expect(p, ':'));
        int stage_of = name_is(s, a, b - a, "fields", 6) ? 1
                       : name_is(s, a, b - a, "ifs", 3)  ? 2
                       : name_is(s, a, b - a, "bgp", 3)  ? 3
                       : name_is(s, a, b - a, "rows", 4) ? 4
                                                         : 0;
        if (stage_of == 0) {
            int bit = name_is(s, a, b - a, "device", 6)    ? S_DEVICE
                      : name_is(s, a, b - a, "address", 7) ? S_ADDRESS
                      : name_is(s, a, b - a, "ts", 2)      ? S_TS
                                                           : 0;
            if (bit == 0 || (seen & bit) || stage > 0) {
                NOT_FOR_US(); /* unknown, repeated, or after the sets */
            }
            seen |= bit;
            if (bit == S_DEVICE) {
                STEP(string_value(p, &device));
            }
            else if (bit == S_ADDRESS) {
                STEP(string_value(p, &address));
            }
            else {
                Number num;
                STEP(scan_number(p, &num));
                result = number_value(p, &num, &ts);
                if (result == FAILED) {
                    goto done;
                }
                if (result != DONE || !(ts > 0 && ts < 1e11)) {
                    NOT_FOR_US(); /* the contract's Unix time in seconds */
                }
                /* round(ts * 1000), as Python rounds: to nearest, ties to even */
                m.stamp_len = PyOS_snprintf(m.stamp, sizeof(m.stamp), " %lld\n",
                                            (long long)nearbyint(ts * 1000.0));
            }
        }
        else {
            if (stage_of <= stage || seen != (S_DEVICE | S_ADDRESS | S_TS)) {
                NOT_FOR_US(); /* out of order, repeated, or before what its lines need */
            }
            stage = stage_of;
            if (m.tags == NULL) {
                m.tags = PyObject_CallFunctionObjArgs(ctx->device_tags, address, device, ctx->rtc,
                                                      ctx->site, NULL);
                if (m.tags == NULL) {
                    result = FAILED;
                    goto done;
                }
            }
            if (stage_of == 1) {
                PyObject *head = PyObject_GetAttr(m.tags, str_device_line);
                if (head == NULL) {
                    result = FAILED;
                    goto done;
                }
                Py_ssize_t line_start = p->at, count;
                result = put_bytes(p, head);
                Py_DECREF(head);
                STEP(result);
                STEP(field_set(p, DEVICE_SET, &taken, &count));
                STEP(finish_line(p, line_start, count, m.stamp, m.stamp_len));
                device_fields = count > 0;
            }
            else {
                PyObject *shape = PyObject_GetAttr(m.tags, stage_of == 2   ? str_if_shape
                                                           : stage_of == 3 ? str_bgp_shape
                                                                           : str_row_shape);
                if (shape == NULL) {
                    result = FAILED;
                    goto done;
                }
                result = stage_of == 2   ? rows(p, &m, INTERFACE_SET, shape, ctx->learn_interface)
                         : stage_of == 3 ? rows(p, &m, BGP_SET, shape, ctx->learn_bgp)
                                         : rows(p, &m, ROW_SET, shape, ctx->learn_row);
                Py_DECREF(shape);
                STEP(result);
            }
        }
    }
    STEP(more);
    if (seen != (S_DEVICE | S_ADDRESS | S_TS)) {
        NOT_FOR_US(); /* a member missing: the general path names it */
    }
    result = FAILED;
    if (!device_fields) {
        /* no device fields: not a poll (a ping round's rows), none for the window */
        pair = PyTuple_Pack(2, device, Py_None);
        if (pair == NULL || PyList_Append(polls, pair) < 0) {
            goto done;
        }
        result = DONE;
        goto done;
    }
    if (m.count > 0) {
        index = index_of(&m);
    }
    else {
        index = PyTuple_New(0); /* the empty tuple: no interfaces (none kept on the tags) */
    }
    if (index == NULL) {
        goto done;
    }
    rates = PyBytes_FromStringAndSize((const char *)m.rates,
                                      (Py_ssize_t)(2 * m.count * (Py_ssize_t)sizeof(float)));
    ts_object = PyFloat_FromDouble(ts);
    if (rates == NULL || ts_object == NULL) {
        goto done;
    }
    poll = PyTuple_Pack(6, ts_object, taken.cpu ? taken.cpu : Py_None,
                        taken.memory ? taken.memory : Py_None,
                        taken.response_ms ? taken.response_ms : Py_None, index, rates);
    if (poll == NULL) {
        goto done;
    }
    pair = PyTuple_Pack(2, device, poll);
    if (pair == NULL || PyList_Append(polls, pair) < 0) {
        goto done;
    }
    result = DONE;
done:
#undef STEP
#undef NOT_FOR_US
    Py_XDECREF(device);
    Py_XDECREF(address);
    Py_XDECREF(ts_object);
    Py_XDECREF(index);
    Py_XDECREF(rates);
    Py_XDECREF(poll);
    Py_XDECREF(pair);
    taken_clear(&taken);
    sample_free(&m);
    return result;
}

/* ------------------------------------------------------------------ the message */

enum {
    M_V = 1,
    M_AGENT = 2,
    M_SITE = 4,
    M_RTC = 8,
    M_SEQ = 16,
    M_SENT = 32,
    M_KIND = 64,
    M_SAMPLES = 128,
    M_REQUIRED = 127,
};

static int
message(Parser *p, Context *ctx, PyObject *agent, PyObject *polls)
{
    Py_ssize_t site_len, agent_len;
    const char *site = PyUnicode_AsUTF8AndSize(ctx->site, &site_len);
    const char *agent_name = PyUnicode_AsUTF8AndSize(agent, &agent_len);
    if (site == NULL || agent_name == NULL) {
        return FAILED;
    }
    const char *s = p->s;
    int seen = 0;
    int more = opening(p, '{', '}');
    for (; more == MORE; more = next_or_end(p, '}')) {
        Py_ssize_t a, b;
        int escaped;
        TRY(scan_string(p, &a, &b, &escaped));
        TRY(expect(p, ':'));
        Py_ssize_t len = b - a;
        int bit = name_is(s, a, len, "v", 1)         ? M_V
                  : name_is(s, a, len, "agent", 5)   ? M_AGENT
                  : name_is(s, a, len, "site", 4)    ? M_SITE
                  : name_is(s, a, len, "rtc", 3)     ? M_RTC
                  : name_is(s, a, len, "seq", 3)     ? M_SEQ
                  : name_is(s, a, len, "sent", 4)    ? M_SENT
                  : name_is(s, a, len, "kind", 4)    ? M_KIND
                  : name_is(s, a, len, "samples", 7) ? M_SAMPLES
                                                     : 0;
        if (bit == 0 || (seen & bit)) {
            return FALLBACK;
        }
        seen |= bit;
        Number num;
        switch (bit) {
        case M_V: /* the schema version: 1 */
            TRY(scan_number(p, &num));
            if (num.end - num.start != 1 || s[num.start] != '1') {
                return FALLBACK;
            }
            break;
        case M_AGENT:
            TRY(string_is(p, agent_name, agent_len));
            break;
        case M_SITE:
            TRY(string_is(p, site, site_len));
            break;
        case M_RTC:
            TRY(string_value(p, &ctx->rtc));
            break;
        case M_SEQ: { /* a non-negative integer */
            long long seq;
            TRY(scan_number(p, &num));
            TRY(int_value(p, &num, &seq));
            if (seq < 0) {
                return FALLBACK;
            }
            break;
        }
        case M_SENT: { /* a Unix time in seconds */
            double sent;
            TRY(scan_number(p, &num));
            TRY(number_value(p, &num, &sent));
            if (!(sent > 0 && sent < 1e11)) {
                return FALLBACK;
            }
            break;
        }
        case M_KIND:
            TRY(string_is(p, "metrics", 7));
            break;
        default: /* M_SAMPLES: their tags need the rtc */
            if (!(seen & M_RTC)) {
                return FALLBACK;
            }
            int element = opening(p, '[', ']');
            for (; element == MORE; element = next_or_end(p, ']')) {
                TRY(sample(p, ctx, polls));
            }
            TRY(element);
        }
    }
    TRY(more);
    skip_ws(p);
    if (p->i != p->n || (seen & M_REQUIRED) != M_REQUIRED) {
        return FALLBACK;
    }
    return DONE;
}

PyDoc_STRVAR(lines_doc,
"lines(payload, site, agent, device_tags, /)\n--\n\n"
"A metrics payload of the topic's site and agent as line protocol:\n"
"(rtc, lines, count, polls), or None: take the general path.");

static PyObject *
lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "lines takes (payload, site, agent, device_tags)");
        return NULL;
    }
    PyObject *payload = args[0];
    if (!PyUnicode_CheckExact(args[1]) || !PyUnicode_CheckExact(args[2]) ||
        !PyCallable_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "lines: site and agent must be str, device_tags a callable");
        return NULL;
    }
    if (!PyBytes_CheckExact(payload)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(payload);
    Parser p = {PyBytes_AS_STRING(payload), n, 0, NULL, 0, 0, 0};
    Context ctx = {args[1], NULL, args[3], str_learn_interface, str_learn_bgp, str_learn_row};
    PyObject *polls = PyList_New(0), *result = NULL;
    p.cap = n + n / 2 + 256;
    p.out = PyBytes_FromStringAndSize(NULL, p.cap);
    if (polls == NULL || p.out == NULL) {
        goto done;
    }
    int outcome = message(&p, &ctx, args[2], polls);
    if (outcome == FAILED) {
        goto done;
    }
    if (outcome == FALLBACK) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (_PyBytes_Resize(&p.out, p.at) < 0) {
        goto done;
    }
    result = Py_BuildValue("(OOnO)", ctx.rtc, p.out, p.lines, polls);
done:
    Py_XDECREF(p.out);
    Py_XDECREF(ctx.rtc);
    Py_XDECREF(polls);
    return result;
}

/* ------------------------------------------------------------------ for the tests */

PyDoc_STRVAR(number_doc,
"number(token, /)\n--\n\n"
"The double this module reads from a JSON number token, as Python's float() would:\n"
"None when it is not one token of JSON's number grammar that this module takes.");

static PyObject *
number(PyObject *module, PyObject *token)
{
    if (!PyBytes_CheckExact(token)) {
        PyErr_SetString(PyExc_TypeError, "number: token must be bytes");
        return NULL;
    }
    Parser p = {PyBytes_AS_STRING(token), PyBytes_GET_SIZE(token), 0, NULL, 0, 0, 0};
    Number num;
    double v;
    if (scan_number(&p, &num) != DONE || p.i != p.n) {
        Py_RETURN_NONE;
    }
    int done = number_value(&p, &num, &v);
    if (done == FAILED) {
        return NULL;
    }
    return PyFloat_FromDouble(v);
}

PyDoc_STRVAR(powers_of_five_doc,
"powers_of_five(/)\n--\n\n"
"The Eisel-Lemire table: 16 bytes (high, low; big-endian) per power of five from\n"
"5**-342 to 5**308; empty where the algorithm is not compiled in.");

static PyObject *
powers_of_five_table(PyObject *module, PyObject *unused)
{
#ifdef EISEL_LEMIRE
    unsigned char out[sizeof(POW5)];
    size_t at = 0;
    for (int q = 0; q <= POW5_MAX - POW5_MIN; q++) {
        for (int half = 0; half < 2; half++) {
            for (int byte = 7; byte >= 0; byte--) {
                out[at++] = (unsigned char)(POW5[q][half] >> (8 * byte));
            }
        }
    }
    return PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)at);
#else
    return PyBytes_FromStringAndSize(NULL, 0);
#endif
}

static PyMethodDef methods[] = {
    {"lines", (PyCFunction)(void (*)(void))lines, METH_FASTCALL, lines_doc},
    {"number", number, METH_O, number_doc},
    {"powers_of_five", powers_of_five_table, METH_NOARGS, powers_of_five_doc},
    {NULL, NULL, 0, NULL},
};

static int
module_exec(PyObject *module)
{
    return PyModule_AddIntConstant(module, "VERSION", METRICSJSON_VERSION);
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "collector._metricsjson",
    .m_doc = "A metrics payload straight to line protocol (see collector/lineproto.py).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__metricsjson(void)
{
    if (str_device_line == NULL) {
        struct {
            PyObject **slot;
            const char *text;
        } names[] = {
            {&str_device_line, "device_line"},
            {&str_if_shape, "if_shape"},
            {&str_bgp_shape, "bgp_shape"},
            {&str_row_shape, "row_shape"},
            {&str_index, "index"},
            {&str_learn_interface, "learn_interface"},
            {&str_learn_bgp, "learn_bgp"},
            {&str_learn_row, "learn_row"},
        };
        for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
            *names[k].slot = PyUnicode_InternFromString(names[k].text);
            if (*names[k].slot == NULL) {
                for (size_t j = 0; j <= k; j++) {
                    Py_CLEAR(*names[j].slot);
                }
                return NULL;
            }
        }
        for (int c = 0x21; c < 0x7f; c++) {
            NAME_CHAR[c] = c != '"' && c != '\\' && c != ',' && c != '=';
        }
        for (int k = 0; k < SET_KINDS; k++) {
            shapes[k].count = -1;
        }
#ifdef EISEL_LEMIRE
        powers_of_five();
#endif
    }
    return PyModuleDef_Init(&module_def);
}
