namespace eMoE.Inference;

/// <summary>
/// Watches streamed text for stop sequences (OpenAI's <c>stop</c>): text that could still be the start
/// of a stop sequence is held back until it is known not to be one; when one appears, the text
/// before it is released and the rest is dropped. Not thread-safe: one per generated sequence.
/// </summary>
internal sealed class StopSequenceFilter
{
    private readonly IReadOnlyList<string> _stops;
    private string _held = "";

    public StopSequenceFilter(IReadOnlyList<string> stops)
    {
        foreach (string s in stops)
        {
            if (string.IsNullOrEmpty(s)) throw new ArgumentException("a stop sequence must not be empty");
        }
        _stops = stops;
    }

    /// <summary>Whether a stop sequence has appeared (nothing more is released).</summary>
    public bool Stopped { get; private set; }

    /// <summary>Adds newly decoded text; returns the text that can be released now.</summary>
    public string Append(string text)
    {
        if (Stopped || text.Length == 0) return "";
        string all = _held + text;
        int first = -1;
        foreach (string stop in _stops)
        {
            int at = all.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (first < 0 || at < first)) first = at;
        }
        if (first >= 0)
        {
            Stopped = true;
            _held = "";
            return all[..first];
        }
        // Hold back the longest tail that is the start of some stop sequence.
        int keep = 0;
        foreach (string stop in _stops)
        {
            for (int n = Math.Min(stop.Length - 1, all.Length); n > keep; n--)
            {
                if (all.AsSpan(all.Length - n).SequenceEqual(stop.AsSpan(0, n)))
                {
                    keep = n;
                    break;
                }
            }
        }
        _held = all[^keep..];
        return all[..^keep];
    }

    /// <summary>The end of the text: whatever was held back is released (it can no longer become a stop sequence).</summary>
    public string Flush()
    {
        string held = Stopped ? "" : _held;
        _held = "";
        return held;
    }
}
