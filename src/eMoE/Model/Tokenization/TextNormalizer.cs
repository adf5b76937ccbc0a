namespace eMoE.Model;

/// <summary>Applies tokenizer.json's normalizer steps to one text segment (between added tokens).</summary>
internal sealed class TextNormalizer(IReadOnlyList<NormalizerStep> steps)
{
    public string Normalize(string text)
    {
        foreach (var step in steps)
        {
            text = step switch
            {
                // HF's Prepend leaves an empty segment empty, which is why "" encodes to no ids.
                PrependStep p => text.Length == 0 ? text : p.Prefix + text,
                // An evaluator, so that '$' in the content is not read as a substitution.
                ReplaceStep r => r.Pattern.Replace(text, _ => r.Content),
                // ICU's normalisation (the project does not run in invariant-globalization mode).
                UnicodeFormStep u => text.Normalize(u.Form),
                _ => throw new InvalidOperationException($"unknown normalizer step {step}"),
            };
        }

        return text;
    }
}
