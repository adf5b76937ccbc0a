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
                UnicodeFormStep u => u.Form switch
                {
                    System.Text.NormalizationForm.FormC => UnicodeNormalization.Nfc(text),
                    System.Text.NormalizationForm.FormD => UnicodeNormalization.Nfd(text),
                    // Compatibility forms need ICU; the reader refuses them where it is missing.
                    _ => text.Normalize(u.Form),
                },
                _ => throw new InvalidOperationException($"unknown normalizer step {step}"),
            };
        }

        return text;
    }
}
