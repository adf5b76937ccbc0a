using System.Text.RegularExpressions;

namespace eMoE.Model;

/// <summary>One entry of tokenizer.json's <c>added_tokens</c>.</summary>
internal sealed record AddedTokenDefinition(
    int Id, string Content, bool Special, bool LeftStrip, bool RightStrip, bool SingleWord, bool Normalized);

/// <summary>The BPE model section of tokenizer.json.</summary>
internal sealed class BpeModelDefinition
{
    public required Dictionary<string, int> Vocab { get; init; }
    public required List<(string Left, string Right)> Merges { get; init; }
    public string? UnknownToken { get; init; }
    public bool FuseUnknown { get; init; }
    public bool ByteFallback { get; init; }
    public bool IgnoreMerges { get; init; }
    public string? ContinuingSubwordPrefix { get; init; }
    public string? EndOfWordSuffix { get; init; }
}

/// <summary>A normalizer step, in the order tokenizer.json lists them.</summary>
internal abstract record NormalizerStep;

internal sealed record PrependStep(string Prefix) : NormalizerStep;

internal sealed record ReplaceStep(Regex Pattern, string Content) : NormalizerStep;

internal sealed record UnicodeFormStep(System.Text.NormalizationForm Form) : NormalizerStep;

/// <summary>A pre-tokenizer step, in the order tokenizer.json lists them.</summary>
internal abstract record PreTokenizerStep;

/// <summary>HF <c>Split</c>; only the behaviours that keep every character (Isolated) or drop matches (Removed).</summary>
internal sealed record SplitStep(Regex Pattern, bool RemoveMatches) : PreTokenizerStep;

/// <summary>HF <c>ByteLevel</c>: optional GPT-2 regex split, then bytes mapped to printable characters.</summary>
internal sealed record ByteLevelStep(bool AddPrefixSpace, bool UseRegex) : PreTokenizerStep;

/// <summary>HF <c>Metaspace</c>: spaces become the replacement character, optionally prefixed and split on.</summary>
internal sealed record MetaspaceStep(char Replacement, MetaspacePrepend Prepend, bool Split) : PreTokenizerStep;

/// <summary>When Metaspace prepends its replacement character.</summary>
internal enum MetaspacePrepend
{
    Always,
    First,
    Never,
}

/// <summary>A decoder step of the SentencePiece-style chain (Replace, Metaspace, ByteFallback, Fuse, Strip).</summary>
internal abstract record DecoderStep;

internal sealed record ReplaceDecoderStep(string Pattern, string Content) : DecoderStep;

internal sealed record MetaspaceDecoderStep(char Replacement, bool StripFirst) : DecoderStep;

internal sealed record ByteFallbackDecoderStep : DecoderStep;

internal sealed record FuseDecoderStep : DecoderStep;

internal sealed record StripDecoderStep(char Content, int Start) : DecoderStep;

/// <summary>
/// What <c>add_special_tokens</c> adds around a single sequence: ids before and after it.
/// </summary>
internal sealed record SpecialTokenTemplate(int[] Prefix, int[] Suffix);

/// <summary>Everything eMoE uses from tokenizer.json, already validated.</summary>
internal sealed class TokenizerDefinition
{
    public required BpeModelDefinition Model { get; init; }
    public required List<AddedTokenDefinition> AddedTokens { get; init; }
    public required List<NormalizerStep> Normalizer { get; init; }
    public required List<PreTokenizerStep> PreTokenizer { get; init; }

    /// <summary>True when the decoder is ByteLevel; otherwise <see cref="DecoderSteps"/> apply.</summary>
    public required bool ByteLevelDecoder { get; init; }
    public required List<DecoderStep> DecoderSteps { get; init; }

    /// <summary>The post-processor's template, or null when it adds nothing (or there is none).</summary>
    public SpecialTokenTemplate? Template { get; init; }
}
