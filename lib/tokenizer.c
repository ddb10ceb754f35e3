// tokenizer.c — see tokenizer.h for the rules. The hot path (printable ASCII) is table
// driven and allocation-free: words are built in one reused buffer and looked up in an
// open-addressing hash table that holds the vocabulary.
#include "tokenizer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "common.h"
#include "tsv.h"

// ---- id arrays -------------------------------------------------------------------------

static void ids_reserve(mt_ids *a, size_t n) {
    if (n <= a->cap) return;
    size_t cap = a->cap ? a->cap : 64;
    while (cap < n) cap *= 2;
    a->v = mt_realloc(a->v, cap * sizeof *a->v);
    a->cap = cap;
}

void mt_ids_push(mt_ids *a, int32_t id) {
    if (a->n == a->cap) ids_reserve(a, a->n + 1);
    a->v[a->n++] = id;
}

void mt_ids_free(mt_ids *a) {
    free(a->v);
    a->v = NULL;
    a->n = a->cap = 0;
}

// ---- the tokenizer ---------------------------------------------------------------------

enum { A_DROP, A_SPACE, A_PUNCT, A_WORD };  // classes of ASCII bytes

// Special tokens recognised verbatim in the text (Hugging Face's special added tokens).
static const char *const SPECIAL[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
#define N_SPECIAL (sizeof SPECIAL / sizeof *SPECIAL)

struct mt_tokenizer {
    char *text;          // vocab.txt contents, each token NUL-terminated in place
    char **token;        // token[id]
    size_t n_tokens;
    uint32_t *slot_hash; // open addressing; slot_id -1 = empty
    int32_t *slot_id;
    size_t mask;
    size_t max_piece;    // longest token in bytes, without "##": no longer match is possible
    int32_t unk, cls, sep;
    int32_t special_id[N_SPECIAL];
    unsigned char ascii_class[128];
    char ascii_lower[128];
    int32_t ascii_punct_id[128];
    // the word being built
    char *word;
    size_t word_len, word_cap, word_chars;
    // mt_basic_tokenize writes words here instead of running WordPiece
    char **basic_out;
    size_t *basic_cap, basic_len;
};

// FNV-1a over the bytes, seeded differently for "##" continuation pieces, so the table
// is keyed by (is_continuation, bytes) and lookups never build a "##..." string.
static uint32_t piece_hash(const char *s, size_t n, int cont) {
    uint32_t h = cont ? 0x9747b28cu : 0x811c9dc5u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x01000193u;
    }
    return h;
}

static int32_t lookup(const mt_tokenizer *t, const char *s, size_t n, int cont) {
    uint32_t h = piece_hash(s, n, cont);
    for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
        int32_t id = t->slot_id[i];
        if (id < 0) return -1;
        if (t->slot_hash[i] != h) continue;
        const char *tok = t->token[id] + (cont ? 2 : 0);
        if (!memcmp(tok, s, n) && tok[n] == '\0') return id;
    }
}

static void insert(mt_tokenizer *t, int32_t id) {
    const char *tok = t->token[id];
    int cont = tok[0] == '#' && tok[1] == '#' && tok[2] != '\0';
    const char *key = tok + (cont ? 2 : 0);
    size_t n = strlen(key);
    uint32_t h = piece_hash(key, n, cont);
    size_t i = h & t->mask;
    for (; t->slot_id[i] >= 0; i = (i + 1) & t->mask) {
        const char *other = t->token[t->slot_id[i]];
        if (t->slot_hash[i] == h && !strcmp(other, tok)) break;  // duplicate: last one wins
    }
    t->slot_hash[i] = h;
    t->slot_id[i] = id;
    if (n > t->max_piece) t->max_piece = n;
}

static int is_ascii_punct(int c) {
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
           (c >= 123 && c <= 126);
}

static void init_ascii(mt_tokenizer *t) {
    for (int c = 0; c < 128; c++) {
        unsigned char cls = A_WORD;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') cls = A_SPACE;
        else if (c < 32 || c == 127) cls = A_DROP;  // Cc: dropped by clean_text
        else if (is_ascii_punct(c)) cls = A_PUNCT;
        t->ascii_class[c] = cls;
        t->ascii_lower[c] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        char s = (char)c;
        int32_t id = lookup(t, &s, 1, 0);
        t->ascii_punct_id[c] = id >= 0 ? id : t->unk;
    }
}

static int32_t require_token(mt_tokenizer *t, const char *path, const char *name) {
    int32_t id = lookup(t, name, strlen(name), 0);
    if (id < 0) mt_die("%s: the vocabulary has no %s token: is this a BERT vocab.txt?", path, name);
    return id;
}

mt_tokenizer *mt_tokenizer_load(const char *path) {
    mt_tokenizer *t = mt_calloc(1, sizeof *t);
    size_t len;
    char err[4300];
    if (!(t->text = mt_read_file(path, SIZE_MAX, &len, err, sizeof err))) mt_die("%s", err);
    if (len == 0) mt_die("%s: empty vocabulary file", path);
    size_t lines = 0;
    for (size_t i = 0; i < len; i++) lines += t->text[i] == '\n';
    if (t->text[len - 1] != '\n') lines++;
    t->token = mt_malloc(lines * sizeof *t->token);
    for (char *p = t->text; p < t->text + len;) {  // one token per line, as HF: strip "\n"
        char *nl = memchr(p, '\n', (size_t)(t->text + len - p));
        char *end = nl ? nl : t->text + len;
        if (end > p && end[-1] == '\r') end[-1] = '\0';
        *end = '\0';
        t->token[t->n_tokens++] = p;
        p = end + 1;
    }
    if (mt_utf8_valid_prefix(t->text, len) != len) mt_die("%s: invalid UTF-8", path);
    size_t slots = 16;
    while (slots < 2 * t->n_tokens) slots *= 2;
    t->mask = slots - 1;
    t->slot_hash = mt_malloc(slots * sizeof *t->slot_hash);
    t->slot_id = mt_malloc(slots * sizeof *t->slot_id);
    memset(t->slot_id, 0xff, slots * sizeof *t->slot_id);
    for (size_t i = 0; i < t->n_tokens; i++) insert(t, (int32_t)i);
    t->unk = require_token(t, path, "[UNK]");
    t->cls = require_token(t, path, "[CLS]");
    t->sep = require_token(t, path, "[SEP]");
    for (size_t i = 0; i < N_SPECIAL; i++)
        t->special_id[i] = lookup(t, SPECIAL[i], strlen(SPECIAL[i]), 0);
    init_ascii(t);
    t->word_cap = 256;
    t->word = mt_malloc(t->word_cap);
    return t;
}

void mt_tokenizer_free(mt_tokenizer *t) {
    if (!t) return;
    free(t->text);
    free(t->token);
    free(t->slot_hash);
    free(t->slot_id);
    free(t->word);
    free(t);
}

size_t mt_tokenizer_vocab_size(const mt_tokenizer *t) { return t->n_tokens; }
int32_t mt_tokenizer_cls(const mt_tokenizer *t) { return t->cls; }
int32_t mt_tokenizer_sep(const mt_tokenizer *t) { return t->sep; }
int32_t mt_tokenizer_unk(const mt_tokenizer *t) { return t->unk; }

int32_t mt_tokenizer_id(const mt_tokenizer *t, const char *s, size_t n) {
    if (n > 2 && s[0] == '#' && s[1] == '#') return lookup(t, s + 2, n - 2, 1);
    return lookup(t, s, n, 0);
}

const char *mt_tokenizer_token(const mt_tokenizer *t, int32_t id) {
    return id >= 0 && (size_t)id < t->n_tokens ? t->token[id] : NULL;
}

// ---- WordPiece ---------------------------------------------------------------------------

static int is_continuation_byte(char c) { return ((unsigned char)c & 0xC0) == 0x80; }

// Greedy longest-match-first over w[0..len), which holds `chars` code points.
static void wordpiece(const mt_tokenizer *t, const char *w, size_t len, size_t chars,
                      mt_ids *out) {
    if (chars > MT_MAX_WORD_CHARS) {
        mt_ids_push(out, t->unk);
        return;
    }
    size_t mark = out->n, start = 0;
    while (start < len) {
        size_t end = len - start > t->max_piece ? start + t->max_piece : len;
        while (end < len && is_continuation_byte(w[end])) end--;  // back to a char boundary
        int32_t id = -1;
        while (end > start) {
            id = lookup(t, w + start, end - start, start > 0);
            if (id >= 0) break;
            do end--; while (end > start && is_continuation_byte(w[end]));
        }
        if (id < 0) {  // no segmentation: the whole word is unknown
            out->n = mark;
            mt_ids_push(out, t->unk);
            return;
        }
        mt_ids_push(out, id);
        start = end;
    }
}

// ---- basic tokenization ----------------------------------------------------------------

static void emit_word(mt_tokenizer *t, const char *w, size_t len, size_t chars, mt_ids *out) {
    if (!t->basic_out) {
        wordpiece(t, w, len, chars, out);
        return;
    }
    if (t->basic_len + len + 2 > *t->basic_cap) {
        *t->basic_cap = 2 * (t->basic_len + len + 2);
        *t->basic_out = mt_realloc(*t->basic_out, *t->basic_cap);
    }
    memcpy(*t->basic_out + t->basic_len, w, len);
    t->basic_len += len;
    (*t->basic_out)[t->basic_len++] = '\n';
    (*t->basic_out)[t->basic_len] = '\0';
}

static void flush_word(mt_tokenizer *t, mt_ids *out) {
    if (t->word_len) emit_word(t, t->word, t->word_len, t->word_chars, out);
    t->word_len = t->word_chars = 0;
}

static void append_cp(mt_tokenizer *t, int32_t cp) {
    if (t->word_len + 4 > t->word_cap) t->word = mt_realloc(t->word, t->word_cap *= 2);
    t->word_len += (size_t)utf8proc_encode_char(cp, (utf8proc_uint8_t *)t->word + t->word_len);
    t->word_chars++;
}

static int is_cjk(int32_t cp) {
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

static int is_punct(int32_t cp) {
    if (cp < 128) return is_ascii_punct(cp);
    utf8proc_category_t c = utf8proc_category(cp);
    return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO;
}

// Lower-case, NFD, drop Mn; punctuation becomes its own word. Python lower-cases before
// NFD, Rust after stripping marks: lower-casing each decomposed character again covers
// both. (U+0130 İ lower-cases to "i" + U+0307 in full case mapping; the mark is dropped,
// so utf8proc's simple mapping to "i" gives the same result.)
static void normalize_into_word(mt_tokenizer *t, int32_t cp, mt_ids *out) {
    utf8proc_int32_t buf[32];
    int boundclass = 0;
    utf8proc_ssize_t n = utf8proc_decompose_char(utf8proc_tolower(cp), buf, 32,
                                                 UTF8PROC_DECOMPOSE, &boundclass);
    if (n < 0 || n > 32) mt_die("cannot decompose U+%04X", (unsigned)cp);
    for (utf8proc_ssize_t i = 0; i < n; i++) {
        if (utf8proc_category(buf[i]) == UTF8PROC_CATEGORY_MN) continue;
        int32_t c = utf8proc_tolower(buf[i]);
        if (is_punct(c)) {
            flush_word(t, out);
            append_cp(t, c);
            flush_word(t, out);
        } else {
            append_cp(t, c);
        }
    }
}

static void feed_non_ascii(mt_tokenizer *t, int32_t cp, mt_ids *out) {
    if (cp == 0xFFFD) return;
    utf8proc_category_t cat = utf8proc_category(cp);
    switch (cat) {
    case UTF8PROC_CATEGORY_ZS: case UTF8PROC_CATEGORY_ZL: case UTF8PROC_CATEGORY_ZP:
        flush_word(t, out);  // whitespace (Python's str.split splits on Zl, Zp too)
        return;
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_CO: case UTF8PROC_CATEGORY_CS:
        return;  // "control": dropped
    default: break;
    }
    if (is_cjk(cp)) {
        flush_word(t, out);
        normalize_into_word(t, cp, out);
        flush_word(t, out);
        return;
    }
    normalize_into_word(t, cp, out);
}

// Decodes one code point of valid UTF-8 at *p (2 to 4 bytes, first byte >= 0x80).
static int32_t decode_utf8(const unsigned char **p) {
    const unsigned char *s = *p;
    int32_t cp;
    if (s[0] < 0xE0) { cp = (s[0] & 0x1F) << 6 | (s[1] & 0x3F); *p += 2; }
    else if (s[0] < 0xF0) { cp = (s[0] & 0x0F) << 12 | (s[1] & 0x3F) << 6 | (s[2] & 0x3F); *p += 3; }
    else {
        cp = (s[0] & 0x07) << 18 | (s[1] & 0x3F) << 12 | (s[2] & 0x3F) << 6 | (s[3] & 0x3F);
        *p += 4;
    }
    return cp;
}

// Steps 2-6 on a stretch of text without special tokens.
static void tokenize_plain(mt_tokenizer *t, const char *text, size_t n, mt_ids *out) {
    const unsigned char *p = (const unsigned char *)text, *end = p + n;
    t->word_len = t->word_chars = 0;
    while (p < end) {
        unsigned c = *p;
        if (c >= 0x80) {
            feed_non_ascii(t, decode_utf8(&p), out);
            continue;
        }
        p++;
        switch (t->ascii_class[c]) {
        case A_WORD:
            if (t->word_len == t->word_cap) t->word = mt_realloc(t->word, t->word_cap *= 2);
            t->word[t->word_len++] = t->ascii_lower[c];
            t->word_chars++;
            break;
        case A_SPACE: flush_word(t, out); break;
        case A_PUNCT:
            flush_word(t, out);
            if (t->basic_out) emit_word(t, (const char *)p - 1, 1, 1, out);
            else mt_ids_push(out, t->ascii_punct_id[c]);
            break;
        default: break;  // A_DROP
        }
    }
    flush_word(t, out);
}

// Index of the special token that starts at s[0..n), or -1.
static int special_at(const mt_tokenizer *t, const char *s, size_t n) {
    for (size_t i = 0; i < N_SPECIAL; i++) {
        size_t k = strlen(SPECIAL[i]);
        if (t->special_id[i] >= 0 && k <= n && !memcmp(s, SPECIAL[i], k)) return (int)i;
    }
    return -1;
}

void mt_tokenize(mt_tokenizer *t, const char *text, size_t n, mt_ids *out) {
    const char *seg = text, *end = text + n, *p = text;
    while ((p = memchr(p, '[', (size_t)(end - p))) != NULL) {
        int s = special_at(t, p, (size_t)(end - p));
        if (s < 0) { p++; continue; }
        tokenize_plain(t, seg, (size_t)(p - seg), out);
        size_t k = strlen(SPECIAL[s]);
        if (t->basic_out) emit_word(t, p, k, k, out);
        else mt_ids_push(out, t->special_id[s]);
        p += k;
        seg = p;
    }
    tokenize_plain(t, seg, (size_t)(end - seg), out);
}

void mt_basic_tokenize(mt_tokenizer *t, const char *text, size_t n, char **out, size_t *cap) {
    if (!*out || *cap == 0) *out = mt_realloc(*out, *cap = 64);
    (*out)[0] = '\0';
    t->basic_out = out;
    t->basic_cap = cap;
    t->basic_len = 0;
    mt_tokenize(t, text, n, NULL);
    t->basic_out = NULL;
}

// ---- special tokens and truncation -----------------------------------------------------

void mt_truncate_longest_first(size_t *na, size_t *nb, size_t budget) {
    if (*na + *nb <= budget) return;
    int swap = *na > *nb;
    size_t short_n = swap ? *nb : *na, long_n;
    if (short_n <= budget / 2) {
        long_n = budget - short_n;  // only the longer one is cut
    } else {
        short_n = budget / 2;  // both are cut; the longer (b on a tie) keeps the odd token
        long_n = budget - short_n;
    }
    *na = swap ? long_n : short_n;
    *nb = swap ? short_n : long_n;
}

static void append_ids(mt_ids *out, const int32_t *v, size_t n) {
    ids_reserve(out, out->n + n);
    if (n) memcpy(out->v + out->n, v, n * sizeof *v);
    out->n += n;
}

static void fill(mt_ids *out, int32_t value, size_t n) {
    ids_reserve(out, out->n + n);
    for (size_t i = 0; i < n; i++) out->v[out->n++] = value;
}

void mt_encode_single(const mt_tokenizer *t, const mt_ids *ids, size_t max_len, mt_ids *out) {
    size_t k = ids->n + 2 > max_len ? max_len - 2 : ids->n;
    out->n = 0;
    mt_ids_push(out, t->cls);
    append_ids(out, ids->v, k);
    mt_ids_push(out, t->sep);
}

void mt_encode_pair(const mt_tokenizer *t, const mt_ids *a, const mt_ids *b, size_t max_len,
                    mt_ids *out, mt_ids *types) {
    size_t na = a->n, nb = b->n;
    mt_truncate_longest_first(&na, &nb, max_len - 3);
    out->n = types->n = 0;
    mt_ids_push(out, t->cls);
    append_ids(out, a->v, na);
    mt_ids_push(out, t->sep);
    append_ids(out, b->v, nb);
    mt_ids_push(out, t->sep);
    fill(types, 0, na + 2);
    fill(types, 1, nb + 1);
}
