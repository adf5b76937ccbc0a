namespace eMoE.Scheduling;

/// <summary>
/// The cost of a forward step, learned online: step seconds = a + b_d · decode tokens + b_p · prefill
/// tokens, fitted by recursive least squares with directional forgetting: each step ages only what is
/// known along its own features (by <see cref="Forgetting"/>: about the last 50 steps of the same kind
/// count), each step's duration clipped to at most <see cref="StallFactor"/> times what the model
/// predicted for it when it came. Until three steps were seen the constructor's priors are used.
/// Thread-safe and deterministic (same steps, same fit).
/// </summary>
/// <remarks>
/// <para>
/// The clip is there because a step far slower than predicted is mostly not the step: the process
/// was descheduled, collected garbage or compiled code (the first steps after load). Counted in full,
/// one stall of 2 s among n steps of 10 ms raises the fitted a by about 2 s / n: 10 ms still after 200
/// steps, enough for the SLO scheduler's pace rule to see every larger batch as too slow, keep the
/// batch small and let the queue grow.
/// </para>
/// <para>
/// The forgetting is there because the cost of a step drifts (contexts grow, the machine gets busier or
/// quieter). It is directional because steps of one kind say nothing about the others: at light load
/// almost every step decodes one sequence, which fixes a + b_d but not how it splits; only the rare
/// prefills and batches of two tell. Forgetting every direction at each step left the split to the
/// last one or two of those, and their scatter moved it anywhere (on the simulated engine with 25 %
/// step noise, at half its capacity: a = -10.6 ms and
/// b_d = 22 ms, so a batch of two looked 2.5 times slower than it was and newcomers were refused until
/// they missed their first-token deadlines). Forgetting only along each new step's features keeps what
/// older steps said about the other directions until steps of that kind come again.
/// </para>
/// </remarks>
public sealed class StepCostModel
{
    /// <summary>The least any predicted duration is, so a cost is never zero or negative.</summary>
    public const double MinimumSeconds = 1e-9;

    /// <summary>An observed step counts as at most this many times its predicted duration.</summary>
    public const double StallFactor = 4;

    /// <summary>The share of what is known along a step's features that stays when the step is observed.</summary>
    public const double Forgetting = 0.98;

    // Steps before the fit replaces the priors: three unknowns need three equations.
    private const int MinimumSteps = 3;

    // The information the priors start with, per coefficient: small enough that the first steps
    // replace them along the features they cover (an exact fit stays exact to ~1e-9), and a floor
    // that keeps the information matrix invertible along features never seen (b_p stays at its prior
    // while only decode steps come).
    private const double PriorInformation = 1e-9;

    private readonly Lock _gate = new();
    private readonly double[] _prior;
    // R: the information matrix of the features x = (1, decode tokens, prefill tokens); θ: the estimate.
    private readonly double[,] _information = new double[3, 3];
    private readonly double[] _estimate;
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
        _estimate = (double[])_prior.Clone();
        for (int i = 0; i < 3; i++) _information[i, i] = PriorInformation;
    }

    /// <summary>Steps observed so far.</summary>
    public int Steps
    {
        get { lock (_gate) return _steps; }
    }

    /// <summary>The fitted a: seconds per step regardless of its tokens (may be below zero when the data say so).</summary>
    public double FixedSeconds
    {
        get { lock (_gate) return Fit[0]; }
    }

    /// <summary>The fitted b_d: seconds per decoded token.</summary>
    public double DecodeSecondsPerToken
    {
        get { lock (_gate) return Fit[1]; }
    }

    /// <summary>The fitted b_p: seconds per prefilled token, at least <see cref="MinimumSeconds"/>.</summary>
    public double PrefillSecondsPerToken
    {
        get { lock (_gate) return Math.Max(MinimumSeconds, Fit[2]); }
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
        Math.Max(MinimumSeconds, Fit[0] + Fit[1] * decodeTokens + Math.Max(MinimumSeconds, Fit[2]) * prefillTokens);

    /// <summary>The coefficients predictions use: the priors until <see cref="MinimumSteps"/> steps were seen, then the estimate; caller holds the lock.</summary>
    private double[] Fit => _steps >= MinimumSteps ? _estimate : _prior;

    /// <summary>
    /// One forward step over <paramref name="sequences"/> sequences took <paramref name="elapsed"/>,
    /// computing <paramref name="prefillTokens"/> prompt tokens and <paramref name="decodeTokens"/>
    /// decode tokens. The model is linear in tokens: per-sequence overhead shows up in a and b_d. What
    /// is known along this step's features keeps <see cref="Forgetting"/> of its weight; a duration
    /// above <see cref="StallFactor"/> times the current prediction counts as that much.
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
            // Directional forgetting (Kulhavý): R -= (1 - λ) R x xᵀ R / xᵀ R x ages R along x only; then R += x xᵀ.
            var rx = new double[3];
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) rx[i] += _information[i, j] * x[j];
            double along = Dot(x, rx);
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) _information[i, j] += x[i] * x[j] - (1 - Forgetting) * rx[i] * rx[j] / along;
            // θ += R⁻¹ x (y - xᵀ θ).
            double error = y - Dot(x, _estimate);
            var gain = Solve3((double[,])_information.Clone(), x);
            for (int i = 0; i < 3; i++) _estimate[i] += gain[i] * error;
            _steps++;
        }
    }

    private static double Dot(double[] u, double[] v) => u[0] * v[0] + u[1] * v[1] + u[2] * v[2];

    /// <summary>Gaussian elimination with partial pivoting; R stays positive definite (forgetting takes only a share of it, along one direction).</summary>
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
