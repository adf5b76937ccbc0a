using eMoE.Inference;
using eMoE.Model;

namespace eMoE.Prediction;

/// <summary>Sees each layer's MoE input and router logits during a forward step (pre-gate fitting).</summary>
internal interface IRouterInputObserver
{
    /// <summary>
    /// Layer <paramref name="layer"/> routed a step of T tokens: its normalised MoE input [T, H] and
    /// its router logits [T, E]. Layers arrive in order within a step.
    /// </summary>
    void OnRouterInput(int layer, ReadOnlySpan<float> input, ReadOnlySpan<float> logits);
}

/// <summary>How <see cref="PregateFitter.Fit"/> fits the pre-gates.</summary>
public sealed record PregateFitOptions
{
    /// <summary>
    /// Pull toward the training-free gate (layer L+1's own router), relative to the mean diagonal
    /// of the inputs' Gram matrix: 0 is plain least squares, large values give the training-free gate.
    /// </summary>
    public double Ridge { get; init; } = 0.01;
}

/// <summary>Fits <see cref="FittedPregate"/>s on a model's own routing (all experts resident, exact routing).</summary>
public static class PregateFitter
{
    /// <summary>
    /// Runs <paramref name="sequences"/> through <paramref name="model"/> (each from position 0, cut
    /// into windows of the context length) and fits, for every layer L+1 ≥ 1, the linear gate on
    /// layer L's MoE input that best reproduces layer L+1's router logits.
    /// </summary>
    public static FittedPregate Fit(MoeModel model, IEnumerable<IReadOnlyList<int>> sequences, PregateFitOptions? options = null,
        IProgress<string>? progress = null, CancellationToken cancellationToken = default)
    {
        options ??= new PregateFitOptions();
        if (!(options.Ridge >= 0)) throw new ArgumentException($"the ridge strength must be >= 0, got {options.Ridge}");
        var c = model.Config;
        if (c.NumLayers < 2) throw new ArgumentException("a pre-gate needs at least two MoE layers");
        var sums = new GramSums(c.NumLayers, c.HiddenSize, c.NumExperts);
        foreach (var ids in sequences)
        {
            model.ObserveRouterInputs(ids, sums, cancellationToken);
            progress?.Report($"pre-gate fit: {sums.Tokens} tokens");
        }
        if (sums.Tokens == 0) throw new ArgumentException("nothing to fit on: no tokens");
        using var checkpoint = Checkpoint.Open(model.Directory);
        var weights = new float[c.NumLayers][];
        var biases = new float[c.NumLayers][];
        weights[0] = biases[0] = [];
        for (int l = 1; l < c.NumLayers; l++)
        {
            var router = checkpoint.ReadF32(checkpoint.Get(WeightLayout.Router(c, l))); // [E, H]
            (weights[l], biases[l]) = sums.Solve(l, router, options.Ridge);
        }
        return new FittedPregate(c.NumLayers, c.NumExperts, c.HiddenSize, weights, biases, sums.Tokens, options.Ridge);
    }

    /// <summary>
    /// Per predicted layer l ≥ 1: A = Σ x̃x̃ᵀ and B = Σ x̃zᵀ over tokens, x̃ = [layer l-1's MoE input; 1]
    /// and z = layer l's router logits; then G = (A + λI)⁻¹(B + λG₀), G₀ = [routerᵀ; 0].
    /// </summary>
    private sealed class GramSums(int layers, int hidden, int experts) : IRouterInputObserver
    {
        private readonly int _n = hidden + 1;
        private readonly double[][] _a = Enumerable.Range(0, layers).Select(_ => new double[(hidden + 1) * (hidden + 1)]).ToArray();
        private readonly double[][] _b = Enumerable.Range(0, layers).Select(_ => new double[(hidden + 1) * experts]).ToArray();
        private float[] _previous = [];
        private int _previousLayer = -1;

        public long Tokens { get; private set; }

        public void OnRouterInput(int layer, ReadOnlySpan<float> input, ReadOnlySpan<float> logits)
        {
            int t = input.Length / hidden;
            if (layer == 0) Tokens += t;
            if (layer > 0 && _previousLayer == layer - 1 && _previous.Length >= input.Length) Accumulate(layer, t, logits);
            if (_previous.Length < input.Length) _previous = new float[input.Length];
            input.CopyTo(_previous);
            _previousLayer = layer;
        }

        private void Accumulate(int layer, int t, ReadOnlySpan<float> logits)
        {
            var a = _a[layer];
            var b = _b[layer];
            var x = new double[_n];
            for (int i = 0; i < t; i++)
            {
                for (int j = 0; j < hidden; j++) x[j] = _previous[i * hidden + j];
                x[hidden] = 1;
                for (int r = 0; r < _n; r++)
                {
                    double xr = x[r];
                    int row = r * _n;
                    for (int s = r; s < _n; s++) a[row + s] += xr * x[s]; // upper triangle; mirrored in Solve
                    for (int e = 0; e < experts; e++) b[r * experts + e] += xr * logits[i * experts + e];
                }
            }
        }

        public (float[] Weight, float[] Bias) Solve(int layer, float[] router, double ridge)
        {
            var a = (double[])_a[layer].Clone();
            var b = (double[])_b[layer].Clone();
            for (int r = 0; r < _n; r++)
            {
                for (int s = 0; s < r; s++) a[r * _n + s] = a[s * _n + r];
            }
            double meanDiagonal = Enumerable.Range(0, _n).Average(i => a[i * _n + i]);
            double lambda = ridge * meanDiagonal + 1e-9 * Math.Max(meanDiagonal, 1);
            for (int r = 0; r < _n; r++)
            {
                a[r * _n + r] += lambda;
                if (r < hidden)
                {
                    for (int e = 0; e < experts; e++) b[r * experts + e] += lambda * router[e * hidden + r];
                }
            }
            CholeskySolve(a, b, _n, experts);
            var weight = new float[experts * hidden];
            var bias = new float[experts];
            for (int e = 0; e < experts; e++)
            {
                for (int j = 0; j < hidden; j++) weight[e * hidden + j] = (float)b[j * experts + e];
                bias[e] = (float)b[hidden * experts + e];
            }
            return (weight, bias);
        }

        /// <summary>Solves A X = B in place (B becomes X) for a symmetric positive-definite A [n, n], B [n, m].</summary>
        private static void CholeskySolve(double[] a, double[] b, int n, int m)
        {
            for (int j = 0; j < n; j++)
            {
                double d = a[j * n + j];
                for (int k = 0; k < j; k++) d -= a[j * n + k] * a[j * n + k];
                if (!(d > 0)) throw new InvalidOperationException("the pre-gate fit is singular; raise the ridge strength");
                d = Math.Sqrt(d);
                a[j * n + j] = d;
                for (int i = j + 1; i < n; i++)
                {
                    double s = a[i * n + j];
                    for (int k = 0; k < j; k++) s -= a[i * n + k] * a[j * n + k];
                    a[i * n + j] = s / d;
                }
            }
            for (int col = 0; col < m; col++)
            {
                for (int i = 0; i < n; i++) // L y = b
                {
                    double s = b[i * m + col];
                    for (int k = 0; k < i; k++) s -= a[i * n + k] * b[k * m + col];
                    b[i * m + col] = s / a[i * n + i];
                }
                for (int i = n - 1; i >= 0; i--) // Lᵀ x = y
                {
                    double s = b[i * m + col];
                    for (int k = i + 1; k < n; k++) s -= a[k * n + i] * b[k * m + col];
                    b[i * m + col] = s / a[i * n + i];
                }
            }
        }
    }
}
