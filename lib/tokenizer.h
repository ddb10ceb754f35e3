// tokenizer.h — BERT WordPiece, identical to Hugging Face's BertTokenizer for an uncased
// vocabulary (do_lower_case=True, tokenize_chinese_chars=True, strip_accents default).
//
// Pipeline per text (the order matters for parity):
//   1. special tokens written literally in the text ([CLS], [SEP], [MASK], [UNK], [PAD])
//      are kept as those tokens, as Hugging Face does for its special "added tokens";
//   2. clean: drop U+0000, U+FFFD and every C* (control, format, unassigned, private-use)
//      code point except \t \n \r; Zs / Zl / Zp and \t \n \r separate words;
//   3. CJK ideographs become words of their own;
//   4. lower-case, NFD, drop non-spacing marks (Mn);
//   5. punctuation (Unicode P* and every non-alphanumeric printable ASCII character) becomes
//      a word of its own;
//   6. WordPiece: greedy longest-match-first with "##" continuations; a word with no
//      segmentation, or longer than 100 characters, becomes one [UNK].
// Unicode properties come from utf8proc; printable ASCII takes a table-driven fast path.
#ifndef MT_TOKENIZER_H
#define MT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#define MT_MAX_WORD_CHARS 100  // Hugging Face's max_input_chars_per_word

typedef struct mt_tokenizer mt_tokenizer;

// A growable array of token ids; reuse one across calls so the hot path does not allocate.
typedef struct {
    int32_t *v;
    size_t n, cap;
} mt_ids;
void mt_ids_push(mt_ids *a, int32_t id);
void mt_ids_free(mt_ids *a);

// Loads vocab.txt (one token per line, id = line number - 1). Dies on a missing or
// malformed file, or one without [UNK], [CLS] and [SEP].
mt_tokenizer *mt_tokenizer_load(const char *vocab_path);
void mt_tokenizer_free(mt_tokenizer *t);

size_t mt_tokenizer_vocab_size(const mt_tokenizer *t);
// The id of token s[0..n) ("##x" for a continuation piece), or -1 if not in the vocabulary.
int32_t mt_tokenizer_id(const mt_tokenizer *t, const char *s, size_t n);
const char *mt_tokenizer_token(const mt_tokenizer *t, int32_t id);  // NULL if out of range
int32_t mt_tokenizer_cls(const mt_tokenizer *t);
int32_t mt_tokenizer_sep(const mt_tokenizer *t);
int32_t mt_tokenizer_unk(const mt_tokenizer *t);

// Appends the WordPiece ids of UTF-8 text[0..n) to out (no [CLS]/[SEP]). The text must be
// valid UTF-8 (the TSV reader checks); it may contain U+0000.
void mt_tokenize(mt_tokenizer *t, const char *text, size_t n, mt_ids *out);

// Steps 2-5 only: the words of the text, each followed by one '\n', into out (NUL-terminated;
// resized as needed). Used by the unit tests to check the splitting rules.
void mt_basic_tokenize(mt_tokenizer *t, const char *text, size_t n, char **out, size_t *cap);

// How many tokens of a and b to keep so that na + nb <= budget, by the longest_first rule of
// Hugging Face's Rust tokenizers (transformers 5's BertTokenizer): if the shorter one fits in
// half the budget only the longer is cut; otherwise both are cut to half, and the longer
// (b on a tie) keeps the odd token. (The old Python BertTokenizer removes one token at a
// time from the longer, b on a tie, which gives a the odd token instead: the two disagree
// when both are cut and the budget is odd; tests/make_tokenizer_refs.py reports it.)
void mt_truncate_longest_first(size_t *na, size_t *nb, size_t budget);

// [CLS] ids[0..k) [SEP] with k chosen so the result has at most max_len tokens (max_len >= 2).
void mt_encode_single(const mt_tokenizer *t, const mt_ids *ids, size_t max_len, mt_ids *out);
// [CLS] a [SEP] b [SEP], truncated longest_first to at most max_len tokens (max_len >= 3);
// types gets 0 for [CLS] a [SEP] and 1 for b [SEP].
void mt_encode_pair(const mt_tokenizer *t, const mt_ids *a, const mt_ids *b, size_t max_len,
                    mt_ids *out, mt_ids *types);

#endif
