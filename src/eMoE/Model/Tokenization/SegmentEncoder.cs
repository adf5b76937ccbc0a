namespace eMoE.Model;

/// <summary>
/// Normalizer, pre-tokenizer and BPE model for the text between raw-matched added tokens. Added tokens
/// marked <c>normalized</c> are, as in HF, matched after normalization, in their normalized form.
/// </summary>
internal sealed class SegmentEncoder(TextNormalizer normalizer, AddedTokenSplitter normalizedTokens, PreTokenizer preTokenizer, IBpeModel model)
{
    public void Encode(string segment, bool atTextStart, List<int> ids)
    {
        string normalized = normalizer.Normalize(segment);
        foreach (var part in normalizedTokens.Split(normalized))
        {
            if (part.IsToken)
            {
                ids.Add(part.TokenId);
                continue;
            }

            string text = normalized.Substring(part.Start, part.Length);
            foreach (string word in preTokenizer.Split(text, atTextStart && part.Start == 0))
            {
                model.Encode(word, ids);
            }
        }
    }
}
