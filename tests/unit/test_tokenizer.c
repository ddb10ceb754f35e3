// Unit tests of the tokenizer's pieces and of the TSV reader. Expected values are
// Hugging Face BertTokenizer outputs for the all-MiniLM-L6-v2 vocabulary (uncased).
#include <stdint.h>
#include <unistd.h>

#include "check.h"
#include "tokenizer.h"
#include "tsv.h"

static mt_tokenizer *tok;
static char *words;
static size_t words_cap;

// Words of the basic tokenizer, '\n'-terminated each.
static const char *basic(const char *text) {
    mt_basic_tokenize(tok, text, strlen(text), &words, &words_cap);
    return words;
}

// Ids of text as "1 2 3".
static const char *ids_of(const char *text, size_t n) {
    static char buf[4096];
    mt_ids ids = {0};
    mt_tokenize(tok, text, n, &ids);
    size_t k = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < ids.n && k < sizeof buf - 16; i++)
        k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%d", i ? " " : "", ids.v[i]);
    mt_ids_free(&ids);
    return buf;
}
#define IDS(s) ids_of(s, sizeof(s) - 1)

TEST(vocab_lookup) {
    CHECK(mt_tokenizer_vocab_size(tok) == 30522);
    CHECK(mt_tokenizer_cls(tok) == 101);
    CHECK(mt_tokenizer_sep(tok) == 102);
    CHECK(mt_tokenizer_unk(tok) == 100);
    CHECK(mt_tokenizer_id(tok, "the", 3) == 1996);
    CHECK(mt_tokenizer_id(tok, "##ing", 5) == 2075);
    CHECK(mt_tokenizer_id(tok, "ing", 3) != 2075);
    CHECK(mt_tokenizer_id(tok, "#", 1) == 1001);
    CHECK(mt_tokenizer_id(tok, "qwxzjkq", 7) == -1);
    CHECK(!strcmp(mt_tokenizer_token(tok, 1996), "the"));
    CHECK(mt_tokenizer_token(tok, 30522) == NULL);
}

TEST(basic_splits_punctuation_and_whitespace) {
    CHECK(!strcmp(basic("Hello, World!"), "hello\n,\nworld\n!\n"));
    CHECK(!strcmp(basic("  a\t\tb \n c  "), "a\nb\nc\n"));
    CHECK(!strcmp(basic("don't"), "don\n'\nt\n"));
    CHECK(!strcmp(basic("$5+x=<y>"), "$\n5\n+\nx\n=\n<\ny\n>\n"));  // ASCII symbols split
    CHECK(!strcmp(basic("a\xe2\x80\x94" "b"), "a\n\xe2\x80\x94\nb\n"));   // em dash (Pd)
    CHECK(!strcmp(basic("1\xc2\xb0" "C"), "1\xc2\xb0" "c\n"));          // degree sign is So, kept
    CHECK(!strcmp(basic(""), ""));
    CHECK(!strcmp(basic("   "), ""));
}

TEST(basic_cleans_controls_and_unicode_spaces) {
    CHECK(!strcmp(basic("a\x01" "b\x7f" "c"), "abc\n"));                  // Cc dropped
    CHECK(!strcmp(basic("zero\xe2\x80\x8bwidth"), "zerowidth\n"));        // U+200B (Cf)
    CHECK(!strcmp(basic("x\xef\xbf\xbdy"), "xy\n"));                      // U+FFFD dropped
    CHECK(!strcmp(basic("a\xc2\xa0" "b\xe3\x80\x80" "c"), "a\nb\nc\n"));   // NBSP, ideographic
    CHECK(!strcmp(basic("a\xe2\x80\xa8" "b"), "a\nb\n"));                 // U+2028 (Zl)
    CHECK(!strcmp(basic("a\x0b" "b"), "ab\n"));                           // \v is Cc: dropped
    const char nul[] = "a\0b";
    mt_basic_tokenize(tok, nul, 3, &words, &words_cap);
    CHECK(!strcmp(words, "ab\n"));                                        // U+0000 dropped
}

TEST(basic_lowercases_and_strips_accents) {
    CHECK(!strcmp(basic("Caf\xc3\xa9 R\xc3\x89SUM\xc3\x89"), "cafe\nresume\n"));
    CHECK(!strcmp(basic("e\xcc\x81"), "e\n"));                        // combining acute
    CHECK(!strcmp(basic("\xc4\xb0stanbul"), "istanbul\n"));           // U+0130 dotted I
    CHECK(!strcmp(basic("Stra\xc3\x9f" "e"), "stra\xc3\x9f" "e\n"));   // ß stays
    CHECK(!strcmp(basic("\xef\xac\x81ne"), "\xef\xac\x81ne\n"));       // ﬁ ligature stays
    CHECK(!strcmp(basic("\xce\x9f\xce\xa3"), "\xce\xbf\xcf\x83\n"));   // ΟΣ -> οσ (no final ς)
}

TEST(basic_splits_cjk_characters) {
    // 我爱 -> each ideograph its own word; kana are not CJK ideographs
    CHECK(!strcmp(basic("ab\xe6\x88\x91\xe7\x88\xb1" "cd"), "ab\n\xe6\x88\x91\n\xe7\x88\xb1\ncd\n"));
    CHECK(!strcmp(basic("\xe3\x81\xae\xe3\x81\xa8"), "\xe3\x81\xae\xe3\x81\xa8\n"));
    CHECK(!strcmp(basic("\xef\xa4\x80"), "\xe8\xb1\x88\n"));  // U+F900 -> NFD U+8C48
}

TEST(basic_keeps_special_tokens) {
    CHECK(!strcmp(basic("[CLS] x[MASK]ed"), "[CLS]\nx\n[MASK]\ned\n"));
    CHECK(!strcmp(basic("[cls]"), "[\ncls\n]\n"));  // case-sensitive, as in Hugging Face
}

TEST(wordpiece_greedy_longest_match) {
    CHECK(!strcmp(IDS("unaffable"), "14477 20961 3468"));  // una ##ffa ##ble
    CHECK(!strcmp(IDS("the running dogs"), "1996 2770 6077"));
    CHECK(!strcmp(IDS("Chhattisgarh"), "10381 12707 7315 13484"));  // ch ##hat ##tis ##garh
    CHECK(!strcmp(IDS("[MASK]ed"), "103 3968"));  // "ed" starts a new word after a special
}

TEST(wordpiece_unknown_is_whole_word) {
    CHECK(!strcmp(IDS("\xe2\x9f\x81"), "100"));                 // ⟁ not in the vocab
    CHECK(!strcmp(IDS("a\xe2\x9f\x81" "b c"), "100 1039"));     // whole word, not a piece
    CHECK(!strcmp(IDS(""), ""));
}

TEST(wordpiece_limit_is_100_characters) {
    char w[256];
    memset(w, 'a', 100);
    CHECK(strcmp(ids_of(w, 100), "100") != 0);  // 100 chars: segmented
    memset(w, 'a', 101);
    CHECK(!strcmp(ids_of(w, 101), "100"));       // 101 chars: [UNK]
    // 100 accented characters are 200 bytes but 100 characters: still segmented
    for (int i = 0; i < 100; i++) memcpy(w + 2 * i, "\xc3\xa9", 2);
    const char *r = ids_of(w, 200);
    CHECK(strcmp(r, "100") != 0 && strlen(r) > 0);
    for (int i = 0; i < 101; i++) memcpy(w + 2 * i, "\xc3\xa9", 2);
    CHECK(!strcmp(ids_of(w, 202), "100"));
}

TEST(truncate_longest_first) {
    size_t a = 5, b = 3;
    mt_truncate_longest_first(&a, &b, 10);  // fits: unchanged
    CHECK(a == 5 && b == 3);
    a = 20, b = 3;
    mt_truncate_longest_first(&a, &b, 10);  // only the longer one is cut
    CHECK(a == 7 && b == 3);
    a = 3, b = 20;
    mt_truncate_longest_first(&a, &b, 10);
    CHECK(a == 3 && b == 7);
    a = 11, b = 11;
    mt_truncate_longest_first(&a, &b, 21);  // tie, odd budget: b keeps the odd token
    CHECK(a == 10 && b == 11);
    a = 12, b = 11;
    mt_truncate_longest_first(&a, &b, 21);  // the longer keeps the odd token
    CHECK(a == 11 && b == 10);
    a = 30, b = 40;
    mt_truncate_longest_first(&a, &b, 20);
    CHECK(a == 10 && b == 10);
    a = 0, b = 0;
    mt_truncate_longest_first(&a, &b, 1);
    CHECK(a == 0 && b == 0);
}

TEST(encode_single_and_pair) {
    mt_ids a = {0}, b = {0}, out = {0}, types = {0};
    for (int i = 0; i < 6; i++) mt_ids_push(&a, 1000 + i);
    for (int i = 0; i < 2; i++) mt_ids_push(&b, 2000 + i);
    mt_encode_single(tok, &a, 5, &out);
    CHECK(out.n == 5 && out.v[0] == 101 && out.v[1] == 1000 && out.v[3] == 1002 && out.v[4] == 102);
    mt_encode_single(tok, &a, 512, &out);
    CHECK(out.n == 8 && out.v[7] == 102);
    mt_encode_pair(tok, &a, &b, 8, &out, &types);  // budget 5: a keeps 3, b keeps 2
    int32_t want[] = {101, 1000, 1001, 1002, 102, 2000, 2001, 102};
    int32_t want_t[] = {0, 0, 0, 0, 0, 1, 1, 1};
    CHECK(out.n == 8 && types.n == 8);
    CHECK(out.n == 8 && !memcmp(out.v, want, sizeof want));
    CHECK(types.n == 8 && !memcmp(types.v, want_t, sizeof want_t));
    a.n = b.n = 0;
    mt_encode_pair(tok, &a, &b, 512, &out, &types);  // empty texts: [CLS] [SEP] [SEP]
    CHECK(out.n == 3 && out.v[1] == 102 && out.v[2] == 102 && types.v[2] == 1);
    mt_ids_free(&a), mt_ids_free(&b), mt_ids_free(&out), mt_ids_free(&types);
}

TEST(utf8_validation) {
    CHECK(mt_utf8_valid_prefix("abc", 3) == 3);
    CHECK(mt_utf8_valid_prefix("a\xc3\xa9", 3) == 3);
    CHECK(mt_utf8_valid_prefix("\xf0\x9f\x98\x80", 4) == 4);    // emoji
    CHECK(mt_utf8_valid_prefix("ab\xff", 3) == 2);              // invalid byte
    CHECK(mt_utf8_valid_prefix("a\xc3", 2) == 1);               // truncated sequence
    CHECK(mt_utf8_valid_prefix("\xc0\xaf", 2) == 0);            // overlong '/'
    CHECK(mt_utf8_valid_prefix("\xe0\x80\xaf", 3) == 0);        // overlong, 3 bytes
    CHECK(mt_utf8_valid_prefix("\xed\xa0\x80", 3) == 0);        // surrogate U+D800
    CHECK(mt_utf8_valid_prefix("\xf4\x90\x80\x80", 4) == 0);    // above U+10FFFF
    CHECK(mt_utf8_valid_prefix("\xe2\x82", 2) == 0);
}

static char *write_temp(const char *content) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/test_tsv_%ld.tsv", (long)getpid());
    FILE *f = fopen(path, "wb");
    fputs(content, f);
    fclose(f);
    return path;
}

TEST(tsv_reads_rows_and_reports_bad_ones) {
    char *path = write_temp("id\ttext\tlabel\n1\thello\t3\n2\tbad\n3\tcr\t1\r\n4\t\xff\t0\n5\t\t2");
    mt_tsv *t = mt_tsv_open(path);
    CHECK(t->n_cols == 3);
    CHECK(mt_tsv_col(t, "text") == 1 && mt_tsv_col(t, "nope") == -1);
    CHECK(mt_tsv_next(t) == 1 && !strcmp(t->field[1], "hello") && t->field_len[1] == 5);
    CHECK(mt_tsv_next(t) == -1 && strstr(mt_tsv_error(t), ":3: row has 2 fields, header has 3"));
    CHECK(mt_tsv_next(t) == -1 && strstr(mt_tsv_error(t), ":4: line ends with CR"));
    CHECK(mt_tsv_next(t) == -1 && strstr(mt_tsv_error(t), ":5: invalid UTF-8 at byte 3"));
    CHECK(mt_tsv_next(t) == 1 && t->field_len[1] == 0 && !strcmp(t->field[2], "2"));
    CHECK(t->line_no == 6);
    CHECK(mt_tsv_next(t) == 0);
    mt_tsv_close(t);
    unlink(path);
}

int main(void) {
    const char *root = getenv("MTBERT_ROOT");
    char vocab[4096];
    snprintf(vocab, sizeof vocab, "%s/models/all-MiniLM-L6-v2/vocab.txt", root ? root : ".");
    tok = mt_tokenizer_load(vocab);
    RUN(vocab_lookup);
    RUN(basic_splits_punctuation_and_whitespace);
    RUN(basic_cleans_controls_and_unicode_spaces);
    RUN(basic_lowercases_and_strips_accents);
    RUN(basic_splits_cjk_characters);
    RUN(basic_keeps_special_tokens);
    RUN(wordpiece_greedy_longest_match);
    RUN(wordpiece_unknown_is_whole_word);
    RUN(wordpiece_limit_is_100_characters);
    RUN(truncate_longest_first);
    RUN(encode_single_and_pair);
    RUN(utf8_validation);
    RUN(tsv_reads_rows_and_reports_bad_ones);
    mt_tokenizer_free(tok);
    free(words);
    return check_summary();
}
