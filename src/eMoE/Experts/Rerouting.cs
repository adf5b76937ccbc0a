namespace eMoE.Experts;

/// <summary>
/// eMoE's missing-expert handling: a token whose expert is absent goes to its best resident
/// expert instead. Pure: it reads which experts are ready and rewrites one layer's routing.
/// </summary>
internal static class Rerouting
{
    /// <summary>
    /// Reroutes in place every assignment whose expert is not <paramref name="ready"/> (and whose
    /// weight is at most <paramref name="maxWeight"/>; heavier ones stay, to be loaded) to the
    /// token's highest-ranked ready expert that it does not already use, scaling the new weights so
    /// the token's total router weight is unchanged. Ids and weights are [T * K] in rank order,
    /// probabilities [T, E]. The absent experts are added to <paramref name="missing"/> (once each).
    /// Returns how many assignments moved; 0 as well when fewer than k experts are ready (then
    /// everything is loaded instead).
    /// </summary>
    public static int Reroute(ReadOnlySpan<bool> ready, Span<int> ids, Span<float> weights, ReadOnlySpan<float> probabilities, int topK,
        float maxWeight, List<int> missing)
    {
        int experts = ready.Length;
        int readyCount = 0;
        foreach (bool r in ready)
        {
            if (r) readyCount++;
        }
        if (readyCount < topK) return 0;
        int moved = 0;
        int tokens = ids.Length / topK;
        for (int t = 0; t < tokens; t++)
        {
            var row = probabilities.Slice(t * experts, experts);
            var tokenIds = ids.Slice(t * topK, topK);
            var tokenWeights = weights.Slice(t * topK, topK);
            float before = 0, after = 0;
            bool tokenChanged = false;
            for (int j = 0; j < topK; j++)
            {
                before += tokenWeights[j];
                if (ready[tokenIds[j]] || tokenWeights[j] > maxWeight) continue;
                if (!missing.Contains(tokenIds[j])) missing.Add(tokenIds[j]);
                tokenIds[j] = BestReady(row, ready, tokenIds);
                tokenChanged = true;
                moved++;
            }
            if (!tokenChanged) continue;
            for (int j = 0; j < topK; j++) after += row[tokenIds[j]];
            for (int j = 0; j < topK; j++) tokenWeights[j] = row[tokenIds[j]] * before / after;
        }
        return moved;
    }

    private static int BestReady(ReadOnlySpan<float> probabilities, ReadOnlySpan<bool> ready, ReadOnlySpan<int> taken)
    {
        int best = -1;
        for (int e = 0; e < probabilities.Length; e++)
        {
            if (!ready[e] || taken.Contains(e)) continue;
            if (best < 0 || probabilities[e] > probabilities[best]) best = e;
        }
        return best;
    }
}
