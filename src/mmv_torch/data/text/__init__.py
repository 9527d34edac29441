"""Text in, word ids out: the tokenizer and vocabulary, DMVR's tokenizer and vocabulary files, and the
word-vector files a vocabulary's table is read from."""

from mmv_torch.data.text.dmvr import DmvrTokenizer, dmvr_tokenizer, load_vocabulary_file, read_dmvr_vocabulary
from mmv_torch.data.text.tokenizer import (
    MissingVocabularyError,
    TokenizedText,
    Tokenizer,
    Vocabulary,
    split_words,
)
from mmv_torch.data.text.wordvec import load_word_vectors, vocabulary_for_sentences

__all__ = [
    "DmvrTokenizer", "MissingVocabularyError", "TokenizedText", "Tokenizer", "Vocabulary", "dmvr_tokenizer",
    "load_vocabulary_file", "load_word_vectors", "read_dmvr_vocabulary", "split_words", "vocabulary_for_sentences",
]
