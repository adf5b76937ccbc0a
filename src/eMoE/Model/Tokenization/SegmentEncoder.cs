namespace eMoE.Model;

/// <summary>Normalizer, pre-tokenizer and BPE model for the text between added tokens.</summary>
internal sealed class SegmentEncoder(TextNormalizer normalizer, PreTokenizer preTokenizer, IBpeModel model)
{
    public void Encode(string segment, bool atTextStart, List<int> ids)
    {
        string normalized = normalizer.Normalize(segment);
        if (normalized.Length == 0)
        {
            return;
        }

        foreach (string word in preTokenizer.Split(normalized, atTextStart))
        {
            model.Encode(word, ids);
        }
    }
}
