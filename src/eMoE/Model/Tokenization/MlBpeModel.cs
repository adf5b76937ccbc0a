using Microsoft.ML.Tokenizers;

namespace eMoE.Model;

/// <summary>
/// Plain BPE (no byte fallback, no subword affixes) through Microsoft.ML.Tokenizers' BpeTokenizer. It is
/// given already pre-tokenized, byte-level-mapped words, so its own pre-tokenizer and normalizer are off:
/// Hugging Face's Split / ByteLevel / added-token handling lives in eMoE, where it can be matched exactly.
/// </summary>
internal sealed class MlBpeModel : IBpeModel
{
    private readonly BpeTokenizer _bpe;
    private readonly Dictionary<string, int>? _wholeWords;

    private MlBpeModel(BpeTokenizer bpe, Dictionary<string, int>? wholeWords)
    {
        _bpe = bpe;
        _wholeWords = wholeWords;
    }

    /// <summary>Builds the model, or returns null when the definition needs <see cref="BytePairModel"/>.</summary>
    public static MlBpeModel? TryCreate(BpeModelDefinition model)
    {
        // BpeOptions takes merges as "a b" strings and has no byte fallback or affix handling.
        if (model.ByteFallback || model.ContinuingSubwordPrefix is not null || model.EndOfWordSuffix is not null
            || model.Merges.Any(m => m.Left.Contains(' ') || m.Right.Contains(' ')))
        {
            return null;
        }

        var options = new BpeOptions(model.Vocab)
        {
            Merges = model.Merges.Select(m => m.Left + " " + m.Right),
            UnknownToken = model.UnknownToken,
            FuseUnknownTokens = model.FuseUnknown,
        };
        return new MlBpeModel(BpeTokenizer.Create(options), model.IgnoreMerges ? model.Vocab : null);
    }

    public void Encode(string word, List<int> ids)
    {
        if (word.Length == 0)
        {
            return;
        }

        // HF's ignore_merges (Llama 3): a word that is itself a vocabulary entry is taken whole.
        if (_wholeWords is not null && _wholeWords.TryGetValue(word, out int whole))
        {
            ids.Add(whole);
            return;
        }

        ids.AddRange(_bpe.EncodeToIds(word, considerPreTokenization: false, considerNormalization: false));
    }
}
