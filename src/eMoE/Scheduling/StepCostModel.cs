namespace eMoE.Scheduling;

/// <summary>
/// The cost of a forward step, learned online: step seconds = a + b_d · decode tokens + b_p · prefill
/// tokens, fitted online by exponentially weighted least squares (each step weighs
/// <see cref="Forgetting"/> times the one after it: about the last 50 steps count), each step's
/// duration clipped to at most <see cref="StallFactor"/> times what the model predicted for it when
/// it came. Until three steps were seen the constructor's priors are used. Thread-safe and
/// deterministic (same steps, same fit).
/// </summary>
/// <remarks>
/// The clip is there because a step far slower than predicted is mostly not the step: the process
/// was descheduled, collected garbage or compiled code (the first steps after load). Counted in full,
/// one stall of 2 s among n steps of 10 ms raises the fitted a by about 2 s / n: 10 ms still after 200
/// steps, enough for the SLO scheduler's pace rule to see every larger batch as too slow, keep the
/// batch small and let the queue grow. The forgetting is there because the cost of a step drifts
/// (contexts grow, the machine gets busier or quieter), and a fit over every step since load follows
/// a lasting change only as fast as the new steps outnumber the old. With both, a lasting slowdown is
/// learned within a few dozen steps: each clipped step still pulls the fit up by up to the factor.
/// </remarks>
public sealed class StepCostModel
{
    /// <summary>The least any predicted duration is, so a cost is never zero or negative.</summary>
    public const double MinimumSeconds = 1e-9;

    /// <summary>An observed step counts as at most this many times its predicted duration.</summary>
    public const double StallFactor = 4;

    /// <summary>The weight of a step relative to the one after it.</summary>
    public const double Forgetting = 0.98;

    // Steps before the fit replaces the priors: three unknowns need three equations.
    private const int MinimumSteps = 3;

    // The ridge pulls each coefficient towards its prior with a weight relative to that column's
    // scale (RelativeRidge) plus a tiny absolute part (AbsoluteRidge). It keeps the normal equations
    // solvable when the steps cannot tell coefficients apart (e.g. no prefill seen yet: b_p stays at
    // its prior), and is small enough to leave an exact fit exact to ~1e-9.
    private const double RelativeRidge = 1e-9;
    private const double AbsoluteRidge = 1e-12;

    private readonly Lock _gate = new();
    private readonly double[] _prior;
    // Weighted normal equations of the features x = (1, decode tokens, prefill tokens): Σ w x xᵀ and
    // Σ w x y, w = Forgetting^(steps since).
    private readonly double[,] _xtx = new double[3, 3];
    private readonly double[] _xty = new double[3];
    private double[] _fit;
    private int _steps;

    /// <summary>A model that predicts with the given priors until it has seen three steps.</summary>
    /// <param name="fixedSeconds">Prior a: the cost of a step regardless of its tokens.</param>
    /// <param name="decodeSecondsPerToken">Prior b_d: the cost of each decoded token (one per running sequence).</param>
    /// <param name="prefillSecondsPerToken">Prior b_p: the cost of each prefilled token.</param>
    /// <exception cref="ArgumentOutOfRangeException">A prior is negative or not finite.</exception>
    public StepCostModel(double fixedSeconds, double decodeSecondsPerToken, double prefillSecondsPerToken)
    {
        RequirePrior(fixedSeconds, nameof(fixedSeconds));
        RequirePrior(decodeSecondsPerToken, nameof(decodeSecondsPerToken));
        RequirePrior(prefillSecondsPerToken, nameof(prefillSecondsPerToken));
        _prior = [fixedSeconds, decodeSecondsPerToken, prefillSecondsPerToken];
        _fit = (double[])_prior.Clone();
    }

    /// <summary>Steps observed so far.</summary>
    public int Steps
    {
        get { lock (_gate) return _steps; }
    }

    /// <summary>The fitted a: seconds per step regardless of its tokens (may be below zero when the data say so).</summary>
    public double FixedSeconds
    {
        get { lock (_gate) return _fit[0]; }
    }

    /// <summary>The fitted b_d: seconds per decoded token.</summary>
    public double DecodeSecondsPerToken
    {
        get { lock (_gate) return _fit[1]; }
    }

    /// <summary>The fitted b_p: seconds per prefilled token, at least <see cref="MinimumSeconds"/>.</summary>
    public double PrefillSecondsPerToken
    {
        get { lock (_gate) return Math.Max(MinimumSeconds, _fit[2]); }
    }

    /// <summary>
    /// Seconds of one decode step of <paramref name="sequences"/> running sequences (one token each):
    /// a + b_d · sequences, at least <see cref="MinimumSeconds"/>.
    /// </summary>
    public double DecodeStepSeconds(int sequences)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(sequences);
        lock (_gate) return Predict(sequences, 0);
    }

    /// <summary>a + b_d · decode tokens + b_p · prefill tokens (b_p at least <see cref="MinimumSeconds"/>), at least <see cref="MinimumSeconds"/>; caller holds the lock.</summary>
    private double Predict(int decodeTokens, int prefillTokens) =>
        Math.Max(MinimumSeconds, _fit[0] + _fit[1] * decodeTokens + Math.Max(MinimumSeconds, _fit[2]) * prefillTokens);

    /// <summary>
    /// One forward step over <paramref name="sequences"/> sequences took <paramref name="elapsed"/>,
    /// computing <paramref name="prefillTokens"/> prompt tokens and <paramref name="decodeTokens"/>
    /// decode tokens. The model is linear in tokens: per-sequence overhead shows up in a and b_d. Older
    /// steps weigh <see cref="Forgetting"/> less for each new one; a duration above
    /// <see cref="StallFactor"/> times the current prediction counts as that much.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A count or the duration is negative.</exception>
    public void Observe(int sequences, int prefillTokens, int decodeTokens, TimeSpan elapsed)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(sequences);
        ArgumentOutOfRangeException.ThrowIfNegative(prefillTokens);
        ArgumentOutOfRangeException.ThrowIfNegative(decodeTokens);
        ArgumentOutOfRangeException.ThrowIfLessThan(elapsed, TimeSpan.Zero);
        double[] x = [1, decodeTokens, prefillTokens];
        lock (_gate)
        {
            double y = Math.Min(elapsed.TotalSeconds, StallFactor * Predict(decodeTokens, prefillTokens));
            for (int i = 0; i < 3; i++)
            {
                for (int j = 0; j < 3; j++) _xtx[i, j] = Forgetting * _xtx[i, j] + x[i] * x[j];
                _xty[i] = Forgetting * _xty[i] + x[i] * y;
            }
            _steps++;
            if (_steps >= MinimumSteps) _fit = SolveRidge();
        }
    }

    /// <summary>(Σ x xᵀ + Λ) β = Σ x y + Λ β_prior, Λ diagonal; caller holds the lock.</summary>
    private double[] SolveRidge()
    {
        var a = new double[3, 3];
        var b = new double[3];
        for (int i = 0; i < 3; i++)
        {
            for (int j = 0; j < 3; j++) a[i, j] = _xtx[i, j];
            double ridge = RelativeRidge * _xtx[i, i] + AbsoluteRidge;
            a[i, i] += ridge;
            b[i] = _xty[i] + ridge * _prior[i];
        }
        return Solve3(a, b);
    }

    /// <summary>Gaussian elimination with partial pivoting; the ridge makes the matrix positive definite.</summary>
    private static double[] Solve3(double[,] a, double[] b)
    {
        const int n = 3;
        for (int col = 0; col < n; col++)
        {
            int pivot = col;
            for (int row = col + 1; row < n; row++)
                if (Math.Abs(a[row, col]) > Math.Abs(a[pivot, col])) pivot = row;
            if (pivot != col)
            {
                for (int k = 0; k < n; k++) (a[col, k], a[pivot, k]) = (a[pivot, k], a[col, k]);
                (b[col], b[pivot]) = (b[pivot], b[col]);
            }
            for (int row = col + 1; row < n; row++)
            {
                double factor = a[row, col] / a[col, col];
                for (int k = col; k < n; k++) a[row, k] -= factor * a[col, k];
                b[row] -= factor * b[col];
            }
        }
        var x = new double[n];
        for (int row = n - 1; row >= 0; row--)
        {
            double sum = b[row];
            for (int k = row + 1; k < n; k++) sum -= a[row, k] * x[k];
            x[row] = sum / a[row, row];
        }
        return x;
    }

    private static void RequirePrior(double value, string name)
    {
        if (!(value >= 0) || double.IsInfinity(value))
            throw new ArgumentOutOfRangeException(name, value, "a step-cost prior must be a non-negative number of seconds");
    }
}
