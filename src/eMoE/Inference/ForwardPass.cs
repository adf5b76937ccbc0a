using System.Runtime.InteropServices;
using eMoE.Compute;
using eMoE.Experts;
using eMoE.Kernels;
using eMoE.Model;
using eMoE.Prediction;
using ILGPU;
using ILGPU.Runtime;

namespace eMoE.Inference;

/// <summary>
/// The forward pass of a MoE transformer, read top to bottom in <see cref="Run"/>. Every buffer is
/// allocated once, for at most <see cref="MaxTokensPerStep"/> tokens per step and
/// <see cref="ContextLength"/> positions of KV cache. One sequence at a time.
/// </summary>
internal sealed class ForwardPass : IDisposable
{
    private readonly ComputeDevice _device;
    private readonly ModelConfig _c;
    private readonly ModelWeights _w;
    private readonly ExpertCache _experts;
    private readonly int[] _hostIds;                   // [T * K] routing read back for the expert cache
    private readonly float[] _hostWeights;             // [T * K] router weights, read back when observed or rerouted
    private readonly float[] _hostRouter;              // [T, E] router logits (then probabilities), read back to reroute or fit pre-gates
    private readonly int[] _hostLookahead;             // [T * W] the pre-gate's picks for the next layer (W = pre-gate width)
    private readonly float[] _hostInput;               // [T * H] a layer's MoE input, read back for pre-gate fitting
    private readonly KernelSet _k;
    private readonly AcceleratorStream _stream;
    private readonly List<IDisposable> _owned = [];

    // Activations; T = tokens in this step.
    private readonly DeviceBuffer<int> _tokens;        // [T]
    private readonly DeviceBuffer<float> _x;           // [T, H] residual stream
    private readonly DeviceBuffer<float> _xn;          // [T, H] normalised
    private readonly DeviceBuffer<float> _q;           // [T, heads * D]
    private readonly DeviceBuffer<float> _kNew;        // [T, kvHeads * D]
    private readonly DeviceBuffer<float> _vNew;        // [T, kvHeads * D]
    private readonly DeviceBuffer<float> _attn;        // [T, heads * D]
    private readonly DeviceBuffer<float> _scores;      // [T, heads, maxSeq]
    private readonly DeviceBuffer<float> _routerLogits; // [T, E]
    private readonly DeviceBuffer<int> _expertIds;     // [T, K]
    private readonly DeviceBuffer<float> _expertWeights; // [T, K]
    private readonly DeviceBuffer<float> _lookaheadLogits; // [T, E] next layer's router on this layer's input
    private readonly DeviceBuffer<int> _lookaheadIds;  // [T, W]
    private readonly DeviceBuffer<float> _lookaheadWeights; // [T, W]
    private readonly DeviceTensor?[] _pregates;        // [L] of [E, H]: fitted pre-gate predicting layer l; null: layer l's router (training-free)
    private readonly DeviceBuffer<float>?[] _pregateBiases; // [L] of [T, E]: its bias, repeated for every token row
    private readonly DeviceBuffer<int> _offsets;       // [E + 1]
    private readonly DeviceBuffer<int> _order;         // [T * K]
    private readonly DeviceBuffer<float> _expertHidden; // [T * K, I]
    private readonly DeviceBuffer<float> _expertOut;   // [T * K, H]
    private readonly DeviceBuffer<float> _logits;      // [T, V]
    private readonly DeviceBuffer<int> _targets;       // [maxSeq] tokens whose likelihood is scored
    private readonly DeviceBuffer<float> _nll;         // [T]
    private readonly DeviceBuffer<int> _sampled;       // [1]
    // KV cache and RoPE tables.
    private readonly DeviceBuffer<float> _kCache;      // [L, maxSeq, kvHeads * D]
    private readonly DeviceBuffer<float> _vCache;      // [L, maxSeq, kvHeads * D]
    private readonly DeviceBuffer<float> _cos;         // [maxSeq, D / 2]
    private readonly DeviceBuffer<float> _sin;         // [maxSeq, D / 2]

    public int MaxTokensPerStep { get; }
    public int ContextLength { get; }

    /// <summary>Sees every layer's routing (trace recording); null when nobody watches.</summary>
    public IRoutingObserver? Observer { get; set; }

    /// <summary>
    /// Profiling: the layer whose tokens go to k distinct random experts (keeping their router
    /// weights) drawn from <see cref="RoutingNoise"/>; -1 for none.
    /// </summary>
    public int RandomRoutingLayer { get; set; } = -1;

    /// <summary>Sees every layer's MoE input and router logits (pre-gate fitting); null when nobody watches.</summary>
    public IRouterInputObserver? RouterInputs { get; set; }

    /// <summary>The random source of <see cref="RandomRoutingLayer"/>.</summary>
    public Random RoutingNoise { get; set; } = new(0);

    public ForwardPass(ComputeDevice device, ModelConfig config, ModelWeights weights, int contextLength, int maxTokensPerStep)
    {
        _device = device;
        _c = config;
        _w = weights;
        _experts = weights.Experts;
        _k = device.Kernels;
        _stream = device.Accelerator.DefaultStream;
        ContextLength = contextLength;
        MaxTokensPerStep = Math.Min(maxTokensPerStep, contextLength);
        int t = MaxTokensPerStep, c = contextLength;
        int h = config.HiddenSize, kv = config.KvDim, tk = t * config.TopK;

        _hostIds = new int[tk];
        _hostWeights = new float[tk];
        _hostRouter = new float[t * config.NumExperts];
        int tw = t * _experts.PregateWidth;
        _hostLookahead = new int[tw];
        _hostInput = new float[(long)t * h];
        _tokens = Own(device.Allocate<int>(t));
        _x = Own(device.Allocate<float>((long)t * h));
        _xn = Own(device.Allocate<float>((long)t * h));
        _q = Own(device.Allocate<float>((long)t * config.QDim));
        _kNew = Own(device.Allocate<float>((long)t * kv));
        _vNew = Own(device.Allocate<float>((long)t * kv));
        _attn = Own(device.Allocate<float>((long)t * config.QDim));
        _scores = Own(device.Allocate<float>((long)t * config.NumHeads * c));
        _routerLogits = Own(device.Allocate<float>((long)t * config.NumExperts));
        _expertIds = Own(device.Allocate<int>(tk));
        _expertWeights = Own(device.Allocate<float>(tk));
        _lookaheadLogits = Own(device.Allocate<float>((long)t * config.NumExperts));
        _lookaheadIds = Own(device.Allocate<int>(tw));
        _lookaheadWeights = Own(device.Allocate<float>(tw));
        (_pregates, _pregateBiases) = UploadPregates(_experts.Pregate ? _experts.FittedPregate : null, t);
        _offsets = Own(device.Allocate<int>(config.NumExperts + 1));
        _order = Own(device.Allocate<int>(tk));
        _expertHidden = Own(device.Allocate<float>((long)tk * config.ExpertIntermediateSize));
        _expertOut = Own(device.Allocate<float>((long)tk * h));
        _logits = Own(device.Allocate<float>((long)t * config.VocabSize));
        _targets = Own(device.Allocate<int>(c));
        _nll = Own(device.Allocate<float>(t));
        _sampled = Own(device.Allocate<int>(1));
        _kCache = Own(device.Allocate<float>((long)config.NumLayers * c * kv));
        _vCache = Own(device.Allocate<float>((long)config.NumLayers * c * kv));
        var (cos, sin) = RopeKernels.Tables(c, config.HeadDim, config.RopeTheta);
        _cos = Own(device.Allocate<float>(cos.Length));
        _sin = Own(device.Allocate<float>(sin.Length));
        _cos.Upload(cos);
        _sin.Upload(sin);
    }

    /// <summary>The fitted pre-gates on the device, indexed by the layer they predict; all null for the training-free pre-gate.</summary>
    private (DeviceTensor?[], DeviceBuffer<float>?[]) UploadPregates(FittedPregate? fitted, int maxTokens)
    {
        var gates = new DeviceTensor?[_c.NumLayers];
        var biases = new DeviceBuffer<float>?[_c.NumLayers];
        if (fitted is null) return (gates, biases); // its shape was checked against the model by the expert cache
        var repeated = new float[maxTokens * _c.NumExperts];
        for (int l = 1; l < _c.NumLayers; l++)
        {
            var gate = DeviceTensor.Allocate(_device, TensorDType.F32, (long)_c.NumExperts * _c.HiddenSize);
            _owned.Add(gate);
            gate.CopyFrom(MemoryMarshal.AsBytes(fitted.Weight(l)), 0);
            gates[l] = gate;
            for (int i = 0; i < maxTokens; i++) fitted.Bias(l).CopyTo(repeated.AsSpan(i * _c.NumExperts));
            biases[l] = Own(_device.Allocate<float>(repeated.Length));
            biases[l]!.Upload(repeated);
        }
        return (gates, biases);
    }

    private DeviceBuffer<T> Own<T>(DeviceBuffer<T> buffer) where T : unmanaged
    {
        _owned.Add(buffer);
        return buffer;
    }

    /// <summary>
    /// Runs <paramref name="tokens"/> at positions start.. through the model, extending the KV
    /// cache. Logits are computed for every token when <paramref name="allLogits"/> (scoring), else
    /// for the last one only (generation). Queued on the device; nothing is read back.
    /// </summary>
    public void Run(ReadOnlySpan<int> tokens, int start, bool allLogits)
    {
        int t = tokens.Length;
        if (t == 0 || t > MaxTokensPerStep) throw new ArgumentOutOfRangeException(nameof(tokens), $"1..{MaxTokensPerStep} tokens per step");
        if (start < 0 || start + t > ContextLength)
            throw new ArgumentOutOfRangeException(nameof(start), $"positions {start}..{start + t - 1} exceed the context length {ContextLength}");
        int h = _c.HiddenSize, lanes = _device.Lanes;
        _tokens.Upload(tokens);
        _experts.BeginStep();
        Observer?.BeginStep(start, t);

        _k.Embedding(_stream, _device.Launch((long)t * h), _tokens.View, _w.Embedding.View, _x.View, t, h);
        for (int l = 0; l < _c.NumLayers; l++)
        {
            var layer = _w.Layers[l];
            // Attention block: x += o(attention(rope(q(n(x))), cache))
            Norm(_x.View, layer.InputNorm, _xn.View, t, h);
            Project(_xn.View, layer.Q, _q.View, t, _c.QDim, h, accumulate: false);
            Project(_xn.View, layer.K, _kNew.View, t, _c.KvDim, h, accumulate: false);
            Project(_xn.View, layer.V, _vNew.View, t, _c.KvDim, h, accumulate: false);
            if (_c.QkNorm == QkNormKind.PerHead)
            {
                Norm(_q.View, layer.QNorm!, _q.View, t * _c.NumHeads, _c.HeadDim);
                Norm(_kNew.View, layer.KNorm!, _kNew.View, t * _c.NumKvHeads, _c.HeadDim);
            }
            else if (_c.QkNorm == QkNormKind.Whole)
            {
                Norm(_q.View, layer.QNorm!, _q.View, t, _c.QDim);
                Norm(_kNew.View, layer.KNorm!, _kNew.View, t, _c.KvDim);
            }
            var (kCache, vCache) = CacheOf(l);
            _k.RopeAndCache(_stream, _device.Launch((long)t * (_c.NumHeads + _c.NumKvHeads) * _c.HeadDim / 2), new RopeArgs
            {
                Q = _q.View, K = _kNew.View, V = _vNew.View, KCache = kCache, VCache = vCache,
                Cos = _cos.View, Sin = _sin.View, Tokens = t, StartPosition = start,
                Heads = _c.NumHeads, KvHeads = _c.NumKvHeads, HeadDim = _c.HeadDim,
            });
            _k.Attention(_stream, _device.Launch((long)t * _c.NumHeads, lanes), new AttentionArgs
            {
                Q = _q.View, KCache = kCache, VCache = vCache, Scores = _scores.View, Output = _attn.View,
                Tokens = t, StartPosition = start, Heads = _c.NumHeads, KvHeads = _c.NumKvHeads,
                HeadDim = _c.HeadDim, MaxSeq = ContextLength,
            }, lanes);
            Project(_attn.View, layer.O, _x.View, t, h, _c.QDim, accumulate: true);

            // MoE block: x += sum_k w_k * expert_k(n(x)), tokens grouped per expert.
            Norm(_x.View, layer.PostAttentionNorm, _xn.View, t, h);
            Route(layer.Router, _routerLogits, _expertIds, _expertWeights, t, _c.TopK);
            bool lookahead = _experts.Pregate && l + 1 < _c.NumLayers;
            if (lookahead)
            {
                Route(_pregates[l + 1] ?? _w.Layers[l + 1].Router, _lookaheadLogits, _lookaheadIds, _lookaheadWeights, t, _experts.PregateWidth,
                    _pregateBiases[l + 1]);
            }

            // The expert cache needs this layer's choices on the host (this also idles the stream).
            var ids = ReadRouting(l, t, lookahead);
            _k.GroupByExpert(_stream, _device.Launch(_c.NumExperts), new GroupArgs
            {
                ExpertIds = _expertIds.View, Offsets = _offsets.View, Order = _order.View,
                Assignments = t * _c.TopK, Experts = _c.NumExperts,
            });
            var experts = new ExpertArgs
            {
                X = _xn.View, ExpertIds = _expertIds.View, ExpertWeights = _expertWeights.View, Order = _order.View,
                SlotOfExpert = _experts.SlotTable(l), Slab = _experts.Weights, Hidden = _expertHidden.View,
                Output = _expertOut.View, Residual = _x.View, Tokens = t, TopK = _c.TopK, HiddenSize = h,
                Intermediate = _c.ExpertIntermediateSize,
            };
            int next = l + 1;
            _experts.RunLayer(l, ids, _stream, () =>
            {
                _k.ExpertGateUp(_stream, _device.Launch((long)t * _c.TopK * _c.ExpertIntermediateSize, lanes), experts, lanes);
                _k.ExpertDown(_stream, _device.Launch((long)t * _c.TopK * h, lanes), experts, lanes);
            }, lookahead ? () => _experts.Lookahead(next, _hostLookahead.AsSpan(0, t * _experts.PregateWidth)) : null);
            _k.ExpertCombine(_stream, _device.Launch((long)t * h), experts);
        }

        // Final norm and LM head, for the rows whose logits are wanted.
        int rows = allLogits ? t : 1;
        var last = _x.View.SubView((long)(t - rows) * h, (long)rows * h);
        Norm(last, _w.FinalNorm, _xn.View, rows, h);
        Project(_xn.View, _w.LmHead, _logits.View, rows, _c.VocabSize, h, accumulate: false);
    }

    /// <summary>
    /// Router logits of the normalised input (plus <paramref name="bias"/>, [T, E], when given),
    /// softmax and the top <paramref name="topK"/> into the given buffers.
    /// </summary>
    private void Route(DeviceTensor router, DeviceBuffer<float> logits, DeviceBuffer<int> ids, DeviceBuffer<float> weights, int t, int topK,
        DeviceBuffer<float>? bias = null)
    {
        long n = (long)t * _c.NumExperts;
        if (bias is not null) bias.View.SubView(0, n).CopyTo(_stream, logits.View.SubView(0, n));
        Project(_xn.View, router, logits.View, t, _c.NumExperts, _c.HiddenSize, accumulate: bias is not null);
        _k.SoftmaxTopK(_stream, _device.Launch(t), new RouterArgs
        {
            Logits = logits.View, ExpertIds = ids.View, ExpertWeights = weights.View,
            Tokens = t, Experts = _c.NumExperts, TopK = topK, Renormalize = _c.NormTopKProb ? 1 : 0,
        });
    }

    /// <summary>
    /// Waits for the device and reads layer <paramref name="layer"/>'s routing to the host, shows it
    /// to the observer, and in reroute mode sends tokens of absent experts to resident ones
    /// (writing the new choices back). Returns the expert ids in use [T * K].
    /// </summary>
    private Span<int> ReadRouting(int layer, int t, bool lookahead)
    {
        int tk = t * _c.TopK;
        var ids = _hostIds.AsSpan(0, tk);
        var weights = _hostWeights.AsSpan(0, tk);
        bool reroute = _experts.OnMiss == MissMode.Reroute;
        _stream.Synchronize();
        _expertIds.Download(ids);
        if (layer == RandomRoutingLayer)
        {
            RandomizeRouting(ids);
            _expertIds.Upload(ids);
        }
        if (Observer is not null || reroute) _expertWeights.Download(weights);
        if (lookahead) _lookaheadIds.Download(_hostLookahead.AsSpan(0, t * _experts.PregateWidth));
        Observer?.OnRouting(layer, ids, weights);
        var router = _hostRouter.AsSpan(0, t * _c.NumExperts);
        if (RouterInputs is not null || reroute) _routerLogits.Download(router);
        if (RouterInputs is { } fitting)
        {
            var input = _hostInput.AsSpan(0, t * _c.HiddenSize);
            _xn.Download(input);
            fitting.OnRouterInput(layer, input, router);
        }
        if (reroute)
        {
            for (int i = 0; i < t; i++) SoftmaxInPlace(router.Slice(i * _c.NumExperts, _c.NumExperts)); // logits become probabilities
            if (_experts.Reroute(layer, ids, weights, router, _c.TopK))
            {
                _expertIds.Upload(ids);
                _expertWeights.Upload(weights);
            }
        }
        return ids;
    }

    /// <summary>Replaces each token's k experts with k distinct random ones.</summary>
    private void RandomizeRouting(Span<int> ids)
    {
        int k = _c.TopK;
        for (int t = 0; t < ids.Length / k; t++)
        {
            var token = ids.Slice(t * k, k);
            for (int j = 0; j < k; j++)
            {
                int e;
                do e = RoutingNoise.Next(_c.NumExperts); while (token[..j].Contains(e));
                token[j] = e;
            }
        }
    }

    private static void SoftmaxInPlace(Span<float> row)
    {
        float max = float.NegativeInfinity;
        foreach (float v in row) max = Math.Max(max, v);
        float sum = 0;
        for (int i = 0; i < row.Length; i++) sum += row[i] = MathF.Exp(row[i] - max);
        for (int i = 0; i < row.Length; i++) row[i] /= sum;
    }

    private (ArrayView<float> K, ArrayView<float> V) CacheOf(int layer)
    {
        long size = (long)ContextLength * _c.KvDim;
        return (_kCache.View.SubView(layer * size, size), _vCache.View.SubView(layer * size, size));
    }

    private void Norm(ArrayView<float> input, DeviceTensor weight, ArrayView<float> output, int rows, int size) =>
        _k.RmsNorm(_stream, _device.Launch(rows, _device.Lanes), input, weight.View, output, rows, size, _c.RmsNormEps, _device.Lanes);

    private void Project(ArrayView<float> x, DeviceTensor w, ArrayView<float> y, int tokens, int n, int k, bool accumulate) =>
        _k.MatMul(_stream, _device.Launch((long)tokens * n, _device.Lanes), new MatMulArgs
        {
            X = x, W = w.View, Y = y, Tokens = tokens, N = n, K = k, Accumulate = accumulate ? 1 : 0,
        }, _device.Lanes);

    /// <summary>Samples from the logits of row <paramref name="row"/> of the last step; waits for the device.</summary>
    public int Sample(int row, SamplingOptions options, float uniform)
    {
        _k.Sample(_stream, _device.Launch(1), new SampleArgs
        {
            Logits = _logits.View.SubView((long)row * _c.VocabSize, _c.VocabSize), Token = _sampled.View, Vocab = _c.VocabSize,
            Temperature = options.Temperature, TopK = options.TopK, TopP = options.TopP, Uniform = uniform,
        });
        Span<int> token = stackalloc int[1];
        _stream.Synchronize();
        _sampled.Download(token);
        return token[0];
    }

    /// <summary>Copies the logits of the last step ([rows, V]) to the host; waits for the device.</summary>
    public void ReadLogits(Span<float> destination)
    {
        _stream.Synchronize();
        _logits.Download(destination);
    }

    /// <summary>Stores the tokens whose likelihood <see cref="ScoreNextTokens"/> reads (one window).</summary>
    public void SetTargets(ReadOnlySpan<int> window) => _targets.Upload(window);

    /// <summary>
    /// Adds -log p(target[first + i + 1] | ...) for the <paramref name="count"/> rows of the last
    /// step (run with all logits) into <paramref name="nll"/>; waits for the device.
    /// </summary>
    public void ScoreNextTokens(int first, int count, Span<float> nll)
    {
        if (count <= 0) return;
        _k.NextTokenNll(_stream, _device.Launch(count), _logits.View, _targets.View.SubView(first, count + 1), _nll.View, count, _c.VocabSize);
        _stream.Synchronize();
        _nll.Download(nll[..count]);
    }

    public void Dispose()
    {
        foreach (var b in _owned) b.Dispose();
        _owned.Clear();
    }
}
