using System.Text;

namespace eMoE.Model;

/// <summary>
/// A direct port of Hugging Face's BPE model (<c>models/bpe/model.rs</c> and <c>word.rs</c>), used for
/// what Microsoft.ML.Tokenizers' BpeTokenizer cannot express: <c>byte_fallback</c> (characters missing
/// from the vocabulary become their <c>&lt;0xNN&gt;</c> byte tokens, which SentencePiece-style models
/// such as Mistral and Llama rely on), continuing-subword prefixes / end-of-word suffixes, and merges whose
/// tokens contain spaces. Stateless after construction, so it is thread-safe.
/// </summary>
internal sealed class BytePairModel : IBpeModel
{
    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocabBySpan;
    private readonly Dictionary<long, (int Rank, int NewId)> _merges;
    private readonly int[]? _byteIds;
    private readonly int? _unknownId;
    private readonly bool _fuseUnknown;
    private readonly bool _ignoreMerges;
    private readonly string? _prefix;
    private readonly string? _suffix;

    public BytePairModel(BpeModelDefinition model, string file)
    {
        _vocab = model.Vocab;
        _vocabBySpan = _vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        _merges = new Dictionary<long, (int, int)>(model.Merges.Count);
        for (int rank = 0; rank < model.Merges.Count; rank++)
        {
            var (left, right) = model.Merges[rank];
            // Like HF, a repeated pair keeps its last rank.
            _merges[Pair(_vocab[left], _vocab[right])] = (rank, _vocab[left + right]);
        }

        if (model.ByteFallback)
        {
            _byteIds = new int[256];
            for (int b = 0; b < 256; b++)
            {
                _byteIds[b] = _vocab.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
            }
        }

        if (model.UnknownToken is { } unk)
        {
            if (!_vocab.TryGetValue(unk, out int unkId))
            {
                throw new ModelFormatException($"{file}: model.unk_token '{unk}' is not in model.vocab");
            }

            _unknownId = unkId;
        }

        _fuseUnknown = model.FuseUnknown;
        _ignoreMerges = model.IgnoreMerges;
        _prefix = model.ContinuingSubwordPrefix;
        _suffix = model.EndOfWordSuffix;
    }

    public void Encode(string word, List<int> ids)
    {
        if (word.Length == 0)
        {
            return;
        }

        if (_ignoreMerges && _vocab.TryGetValue(word, out int whole))
        {
            ids.Add(whole);
            return;
        }

        var symbols = InitialSymbols(word);
        MergeAll(symbols);
        foreach (int id in symbols)
        {
            if (id >= 0)
            {
                ids.Add(id);
            }
        }
    }

    // One symbol per Unicode scalar value, as HF iterates chars; see BPE::merge_word.
    private List<int> InitialSymbols(string word)
    {
        var symbols = new List<int>(word.Length);
        int? pendingUnknown = null;
        for (int i = 0; i < word.Length;)
        {
            int length = char.IsHighSurrogate(word[i]) && i + 1 < word.Length && char.IsLowSurrogate(word[i + 1]) ? 2 : 1;
            ReadOnlySpan<char> s = word.AsSpan(i, length);
            bool first = i == 0;
            i += length;
            bool last = i == word.Length;

            int id;
            bool found;
            if ((_prefix is not null && !first) || (_suffix is not null && last))
            {
                string decorated = (!first ? _prefix : null) + s.ToString() + (last ? _suffix : null);
                found = _vocab.TryGetValue(decorated, out id);
                s = decorated;
            }
            else
            {
                found = _vocabBySpan.TryGetValue(s, out id);
            }

            if (found)
            {
                if (pendingUnknown is { } u)
                {
                    symbols.Add(u);
                    pendingUnknown = null;
                }

                symbols.Add(id);
                continue;
            }

            if (_byteIds is not null && TryAddBytes(s, symbols))
            {
                continue;
            }

            if (_unknownId is { } unk)
            {
                if (pendingUnknown is not null && !_fuseUnknown)
                {
                    symbols.Add(unk);
                }

                pendingUnknown = unk;
            }
        }

        if (pendingUnknown is { } tail)
        {
            symbols.Add(tail);
        }

        return symbols;
    }

    private bool TryAddBytes(ReadOnlySpan<char> s, List<int> symbols)
    {
        Span<byte> utf8 = stackalloc byte[Encoding.UTF8.GetMaxByteCount(s.Length)];
        int count = Encoding.UTF8.GetBytes(s, utf8);
        foreach (byte b in utf8[..count])
        {
            if (_byteIds![b] < 0)
            {
                return false;
            }
        }

        foreach (byte b in utf8[..count])
        {
            symbols.Add(_byteIds![b]);
        }

        return true;
    }

    // HF's Word::merge_all: always apply the lowest-ranked pair, leftmost first. Merged-away symbols
    // become -1; a queued merge is stale when its position no longer yields the same new token.
    private void MergeAll(List<int> symbols)
    {
        int n = symbols.Count;
        if (n < 2)
        {
            return;
        }

        var next = new int[n];
        var prev = new int[n];
        for (int i = 0; i < n; i++)
        {
            next[i] = i + 1 < n ? i + 1 : -1;
            prev[i] = i - 1;
        }

        var queue = new PriorityQueue<(int Pos, int NewId), (int Rank, int Pos)>();
        for (int i = 0; i + 1 < n; i++)
        {
            if (_merges.TryGetValue(Pair(symbols[i], symbols[i + 1]), out var m))
            {
                queue.Enqueue((i, m.NewId), (m.Rank, i));
            }
        }

        while (queue.TryDequeue(out var top, out _))
        {
            int pos = top.Pos;
            int right = next[pos];
            if (symbols[pos] < 0 || right < 0)
            {
                continue;
            }

            if (!_merges.TryGetValue(Pair(symbols[pos], symbols[right]), out var current) || current.NewId != top.NewId)
            {
                continue;
            }

            symbols[pos] = top.NewId;
            symbols[right] = -1;
            next[pos] = next[right];
            if (next[pos] >= 0)
            {
                prev[next[pos]] = pos;
            }

            int p = prev[pos];
            if (p >= 0 && _merges.TryGetValue(Pair(symbols[p], symbols[pos]), out var left))
            {
                queue.Enqueue((p, left.NewId), (left.Rank, p));
            }

            int nx = next[pos];
            if (nx >= 0 && _merges.TryGetValue(Pair(symbols[pos], symbols[nx]), out var after))
            {
                queue.Enqueue((pos, after.NewId), (after.Rank, pos));
            }
        }
    }

    private static long Pair(int left, int right) => ((long)left << 32) | (uint)right;
}
