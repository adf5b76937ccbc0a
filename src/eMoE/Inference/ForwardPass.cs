using eMoE.Compute;
using eMoE.Experts;
using eMoE.Kernels;
using eMoE.Model;
using eMoE.Prediction;

namespace eMoE.Inference;

/// <summary>
/// The forward pass of a MoE transformer over a ragged batch, read top to bottom in <see cref="Run"/>.
/// A step holds any mix of prefill chunks and decode tokens of different sequences; every token
/// carries its own position and reads its own sequence's KV blocks. Every buffer is allocated once,
/// for at most <see cref="MaxTokensPerStep"/> tokens per step. The KV cache belongs to the caller.
/// Every operation goes through the <see cref="ComputeBackend"/>, so the same pass runs on a GPU,
/// on ILGPU's CPU accelerator and on the host.
/// </summary>
internal sealed class ForwardPass : IStepRunner, IDisposable
{
    private readonly ComputeBackend _b;
    private readonly ModelConfig _c;
    private readonly ModelWeights _w;
    private readonly IExpertResidency _experts;
    private readonly PagedKvCache _kv;
    private readonly List<IDisposable> _owned = [];
    private readonly int _maxSequences;

    // Host mirrors of what is read back; T = tokens in this step.
    private readonly int[] _hostIds;                   // [T * K] routing read back for the expert cache
    private readonly float[] _hostWeights;             // [T * K] router weights, read back when observed or rerouted
    private readonly float[] _hostRouter;              // [T, E] router logits (then probabilities), read back to reroute or fit pre-gates
    private readonly int[] _hostLookahead;             // [T * W] the pre-gate's picks for the next layer (W = pre-gate width)
    private readonly float[] _hostInput;               // [T * H] a layer's MoE input, read back for pre-gate fitting
    private readonly float[] _hostLogits;              // [T, V] logits of scored rows, read back when a sequence captures them
    private readonly int[] _stepInts;                  // the step's integer inputs, uploaded in one copy (layout: StepInts)
    private readonly float[] _stepFloats;              // the step's float inputs: temperature, top-p, draw per sampled row

    // Step inputs on the device: ranges of one int and one float buffer.
    private readonly Buffer<int> _ints;
    private readonly Buffer<float> _floats;
    private readonly BufferView<int> _tokens;          // [T]
    private readonly BufferView<int> _positions;       // [T]
    private readonly BufferView<int> _cacheRows;       // [T]
    private readonly BufferView<int> _sequenceOf;      // [T]
    private readonly BufferView<int> _logitRows;       // [R] rows whose logits are computed (sampled rows first)
    private readonly BufferView<int> _targets;         // [R - samples] next token of each scored row
    private readonly BufferView<int> _topK;            // [samples]
    private readonly BufferView<int> _blockTables;     // [sequences, maxBlocks]
    private readonly BufferView<float> _temperature;   // [samples]
    private readonly BufferView<float> _topP;          // [samples]
    private readonly BufferView<float> _uniform;       // [samples]

    // Activations.
    private readonly Buffer<float> _x;           // [T, H] residual stream
    private readonly Buffer<float> _xn;          // [T, H] normalised
    private readonly Buffer<float> _q;           // [T, heads * D]
    private readonly Buffer<float> _kNew;        // [T, kvHeads * D]
    private readonly Buffer<float> _vNew;        // [T, kvHeads * D]
    private readonly Buffer<float> _attn;        // [T, heads * D]
    private readonly Buffer<float> _scores;      // [T, heads, maxSeq]
    private readonly Buffer<float> _routerLogits; // [T, E]
    private readonly Buffer<int> _expertIds;     // [T, K]
    private readonly Buffer<float> _expertWeights; // [T, K]
    private readonly Buffer<float> _lookaheadLogits; // [T, E] next layer's router on this layer's input
    private readonly Buffer<int> _lookaheadIds;  // [T, W]
    private readonly Buffer<float> _lookaheadWeights; // [T, W]
    private readonly Weight?[] _pregates;              // [L] of [E, H]: fitted pre-gate predicting layer l; null: layer l's router (training-free)
    private readonly Buffer<float>?[] _pregateBiases;  // [L] of [T, E]: its bias, repeated for every token row
    private readonly Buffer<int> _offsets;       // [E + 1]
    private readonly Buffer<int> _order;         // [T * K]
    private readonly Buffer<float> _expertHidden; // [T * K, I]
    private readonly Buffer<float> _expertOut;   // [T * K, H]
    private readonly Buffer<float> _lastHidden;  // [R, H] residual rows whose logits are wanted
    private readonly Buffer<float> _logits;      // [R, V]
    private readonly Buffer<float> _nll;         // [R]
    private readonly Buffer<int> _sampled;       // [R]
    private readonly Buffer<float> _cos;         // [maxSeq, D / 2]
    private readonly Buffer<float> _sin;         // [maxSeq, D / 2]

    /// <summary>Most tokens one step may hold.</summary>
    public int MaxTokensPerStep { get; }

    /// <summary>Positions one sequence may hold.</summary>
    public int ContextLength { get; }

    /// <summary>The KV cache the steps read and write.</summary>
    public PagedKvCache KvCache => _kv;

    /// <summary>Binds the device to the calling thread (every thread that runs steps does this first).</summary>
    public void Bind() => _b.Bind();

    public ForwardPass(ComputeBackend backend, ModelConfig config, ModelWeights weights, PagedKvCache kv, int contextLength, int maxTokensPerStep,
        int maxSequences)
    {
        _b = backend;
        _c = config;
        _w = weights;
        _experts = weights.Experts;
        _kv = kv;
        ContextLength = contextLength;
        MaxTokensPerStep = maxTokensPerStep;
        _maxSequences = maxSequences;
        int t = maxTokensPerStep, c = contextLength;
        int h = config.HiddenSize, kvDim = config.KvDim, tk = t * config.TopK;

        _hostIds = new int[tk];
        _hostWeights = new float[tk];
        _hostRouter = new float[t * config.NumExperts];
        int tw = t * _experts.PregateWidth;
        _hostLookahead = new int[tw];
        _hostInput = new float[(long)t * h];
        _hostLogits = new float[(long)t * config.VocabSize];
        _stepInts = new int[StepInts.Length(t, maxSequences * kv.MaxBlocksPerSequence)];
        _stepFloats = new float[3 * t];
        _ints = Own(backend.Allocate<int>(_stepInts.Length));
        _floats = Own(backend.Allocate<float>(_stepFloats.Length));
        BufferView<int> Ints(int section) => _ints.Slice(StepInts.Offset(section, t), section == StepInts.BlockTables ? maxSequences * kv.MaxBlocksPerSequence : t);
        _tokens = Ints(StepInts.Tokens);
        _positions = Ints(StepInts.Positions);
        _cacheRows = Ints(StepInts.CacheRows);
        _sequenceOf = Ints(StepInts.SequenceOf);
        _logitRows = Ints(StepInts.LogitRows);
        _targets = Ints(StepInts.Targets);
        _topK = Ints(StepInts.TopK);
        _blockTables = Ints(StepInts.BlockTables);
        _temperature = _floats.Slice(0, t);
        _topP = _floats.Slice(t, t);
        _uniform = _floats.Slice(2L * t, t);

        _x = Own(backend.Allocate<float>((long)t * h));
        _xn = Own(backend.Allocate<float>((long)t * h));
        _q = Own(backend.Allocate<float>((long)t * config.QDim));
        _kNew = Own(backend.Allocate<float>((long)t * kvDim));
        _vNew = Own(backend.Allocate<float>((long)t * kvDim));
        _attn = Own(backend.Allocate<float>((long)t * config.QDim));
        _scores = Own(backend.Allocate<float>((long)t * config.NumHeads * c));
        _routerLogits = Own(backend.Allocate<float>((long)t * config.NumExperts));
        _expertIds = Own(backend.Allocate<int>(tk));
        _expertWeights = Own(backend.Allocate<float>(tk));
        _lookaheadLogits = Own(backend.Allocate<float>((long)t * config.NumExperts));
        _lookaheadIds = Own(backend.Allocate<int>(tw));
        _lookaheadWeights = Own(backend.Allocate<float>(tw));
        (_pregates, _pregateBiases) = UploadPregates(_experts.FittedPregate, t);
        _offsets = Own(backend.Allocate<int>(config.NumExperts + 1));
        _order = Own(backend.Allocate<int>(tk));
        _expertHidden = Own(backend.Allocate<float>((long)tk * config.ExpertIntermediateSize));
        _expertOut = Own(backend.Allocate<float>((long)tk * h));
        _lastHidden = Own(backend.Allocate<float>((long)t * h));
        _logits = Own(backend.Allocate<float>((long)t * config.VocabSize));
        _nll = Own(backend.Allocate<float>(t));
        _sampled = Own(backend.Allocate<int>(t));
        var (cos, sin) = RopeKernels.Tables(c, config.HeadDim, config.RopeTheta);
        _cos = Own(backend.Allocate<float>(cos.Length));
        _sin = Own(backend.Allocate<float>(sin.Length));
        backend.Upload<float>(cos, _cos.View);
        backend.Upload<float>(sin, _sin.View);
    }

    /// <summary>Sections of the step's integer upload, each of T ints except the block tables.</summary>
    private static class StepInts
    {
        public const int Tokens = 0, Positions = 1, CacheRows = 2, SequenceOf = 3, LogitRows = 4, Targets = 5, TopK = 6, BlockTables = 7;

        public static int Offset(int section, int maxTokens) => section * maxTokens;

        public static int Length(int maxTokens, int blockTableInts) => BlockTables * maxTokens + blockTableInts;
    }

    /// <summary>The fitted pre-gates on the device, indexed by the layer they predict; all null for the training-free pre-gate.</summary>
    private (Weight?[], Buffer<float>?[]) UploadPregates(FittedPregate? fitted, int maxTokens)
    {
        var gates = new Weight?[_c.NumLayers];
        var biases = new Buffer<float>?[_c.NumLayers];
        if (fitted is null) return (gates, biases); // its shape was checked against the model by the expert cache
        var repeated = new float[maxTokens * _c.NumExperts];
        for (int l = 1; l < _c.NumLayers; l++)
        {
            var gate = _b.CreateWeight(fitted.Weight(l));
            _owned.Add(gate);
            gates[l] = gate;
            for (int i = 0; i < maxTokens; i++) fitted.Bias(l).CopyTo(repeated.AsSpan(i * _c.NumExperts));
            biases[l] = Own(_b.Allocate<float>(repeated.Length));
            _b.Upload<float>(repeated, biases[l]!.View);
        }
        return (gates, biases);
    }

    private Buffer<T> Own<T>(Buffer<T> buffer) where T : unmanaged
    {
        _owned.Add(buffer);
        return buffer;
    }

    /// <summary>
    /// Runs one step: every token of <paramref name="step"/> through the model, writing its keys and
    /// values into its KV-cache row; then the LM head for the rows that need logits, sampling of the
    /// sampled rows and scoring of the scored rows. Waits for the device and writes the results
    /// into <paramref name="step"/> (<see cref="StepBatch.Sampled"/>, <see cref="StepBatch.Nll"/>).
    /// </summary>
    public void Run(StepBatch step)
    {
        int t = step.Tokens;
        if (t == 0 || t > MaxTokensPerStep) throw new ArgumentOutOfRangeException(nameof(step), $"1..{MaxTokensPerStep} tokens per step, got {t}");
        if (step.Slices.Count > _maxSequences) throw new ArgumentOutOfRangeException(nameof(step), $"at most {_maxSequences} sequences per step");
        int h = _c.HiddenSize;
        UploadStep(step);
        _experts.BeginStep();
        foreach (var slice in step.Slices) slice.Hooks?.Routing?.BeginStep(slice.StartPosition, slice.Rows, step.Number);

        _b.Embedding(_tokens, _w.Embedding, _x.View, t, h);
        for (int l = 0; l < _c.NumLayers; l++)
        {
            var layer = _w.Layers[l];
            // Attention block: x += o(attention(rope(q(n(x))), each token's own KV blocks))
            _b.RmsNorm(_x.View, layer.InputNorm, _xn.View, t, h, _c.RmsNormEps);
            _b.MatMul(_xn.View, layer.Q, _q.View, t, _c.QDim, h, accumulate: false);
            _b.MatMul(_xn.View, layer.K, _kNew.View, t, _c.KvDim, h, accumulate: false);
            _b.MatMul(_xn.View, layer.V, _vNew.View, t, _c.KvDim, h, accumulate: false);
            if (_c.QkNorm == QkNormKind.PerHead)
            {
                _b.RmsNorm(_q.View, layer.QNorm!, _q.View, t * _c.NumHeads, _c.HeadDim, _c.RmsNormEps);
                _b.RmsNorm(_kNew.View, layer.KNorm!, _kNew.View, t * _c.NumKvHeads, _c.HeadDim, _c.RmsNormEps);
            }
            else if (_c.QkNorm == QkNormKind.Whole)
            {
                _b.RmsNorm(_q.View, layer.QNorm!, _q.View, t, _c.QDim, _c.RmsNormEps);
                _b.RmsNorm(_kNew.View, layer.KNorm!, _kNew.View, t, _c.KvDim, _c.RmsNormEps);
            }
            var (kCache, vCache) = _kv.Layer(l);
            _b.RopeAndCache(new RopeOp
            {
                Q = _q.View, K = _kNew.View, V = _vNew.View, KCache = kCache, VCache = vCache, Positions = _positions, CacheRows = _cacheRows,
                Cos = _cos.View, Sin = _sin.View, Tokens = t, Heads = _c.NumHeads, KvHeads = _c.NumKvHeads, HeadDim = _c.HeadDim,
            });
            _b.Attention(new AttentionOp
            {
                Q = _q.View, KCache = kCache, VCache = vCache, Positions = _positions, SequenceOf = _sequenceOf, BlockTables = _blockTables,
                Scores = _scores.View, Output = _attn.View, Tokens = t, Heads = _c.NumHeads, KvHeads = _c.NumKvHeads,
                HeadDim = _c.HeadDim, MaxSeq = ContextLength, BlockSize = _kv.BlockSize, MaxBlocks = _kv.MaxBlocksPerSequence,
            });
            _b.MatMul(_attn.View, layer.O, _x.View, t, h, _c.QDim, accumulate: true);

            // MoE block: x += sum_k w_k * expert_k(n(x)), the whole batch's tokens grouped per expert.
            _b.RmsNorm(_x.View, layer.PostAttentionNorm, _xn.View, t, h, _c.RmsNormEps);
            Route(layer.Router, _routerLogits, _expertIds, _expertWeights, t, _c.TopK);
            bool lookahead = _experts.Pregate && l + 1 < _c.NumLayers;
            if (lookahead)
            {
                Route(_pregates[l + 1] ?? _w.Layers[l + 1].Router, _lookaheadLogits, _lookaheadIds, _lookaheadWeights, t, _experts.PregateWidth,
                    _pregateBiases[l + 1]);
            }

            // The expert residency needs this layer's choices on the host (this also idles the device).
            ReadRouting(step, l, lookahead);
            _b.GroupByExpert(_expertIds.View, _offsets.View, _order.View, t * _c.TopK, _c.NumExperts);
            var experts = new ExpertOp
            {
                X = _xn.View, ExpertIds = _expertIds.View, ExpertWeights = _expertWeights.View, Order = _order.View, Offsets = _offsets.View,
                Hidden = _expertHidden.View, Output = _expertOut.View, Residual = _x.View, Tokens = t, TopK = _c.TopK, HiddenSize = h,
                Intermediate = _c.ExpertIntermediateSize, Experts = _c.NumExperts,
            };
            var nextLayerPicks = lookahead ? _hostLookahead.AsMemory(0, t * _experts.PregateWidth) : ReadOnlyMemory<int>.Empty;
            foreach (var pass in _experts.Passes(l, _hostIds.AsMemory(0, t * _c.TopK), nextLayerPicks)) _b.ExpertFfn(experts, pass);
            _b.ExpertCombine(experts);
        }

        // Final norm and LM head, for the rows whose logits are wanted; then sampling and scoring.
        int rows = step.LogitRows;
        if (rows == 0) return;
        _b.GatherRows(_logitRows, _x.View, _lastHidden.View, rows, h);
        _b.RmsNorm(_lastHidden.View, _w.FinalNorm, _xn.View, rows, h, _c.RmsNormEps);
        _b.MatMul(_xn.View, _w.LmHead, _logits.View, rows, _c.VocabSize, h, accumulate: false);
        ReadResults(step);
    }

    /// <summary>Copies the step's per-token inputs, block tables and per-row sampling settings to the device in two uploads.</summary>
    private void UploadStep(StepBatch step)
    {
        int t = step.Tokens, max = MaxTokensPerStep;
        step.TokenIds.AsSpan(0, t).CopyTo(_stepInts.AsSpan(StepInts.Offset(StepInts.Tokens, max)));
        step.Positions.AsSpan(0, t).CopyTo(_stepInts.AsSpan(StepInts.Offset(StepInts.Positions, max)));
        step.CacheRows.AsSpan(0, t).CopyTo(_stepInts.AsSpan(StepInts.Offset(StepInts.CacheRows, max)));
        step.SequenceOf.AsSpan(0, t).CopyTo(_stepInts.AsSpan(StepInts.Offset(StepInts.SequenceOf, max)));
        int blocks = _kv.MaxBlocksPerSequence;
        if (step.MaxBlocks != blocks) throw new ArgumentException($"the step's block tables have {step.MaxBlocks} columns; the KV cache needs {blocks}");
        step.BlockTables.AsSpan(0, step.Slices.Count * blocks).CopyTo(_stepInts.AsSpan(StepInts.Offset(StepInts.BlockTables, max)));
        int samples = step.Samples.Count;
        for (int i = 0; i < samples; i++)
        {
            var s = step.Samples[i];
            _stepInts[StepInts.Offset(StepInts.LogitRows, max) + i] = s.Row;
            _stepInts[StepInts.Offset(StepInts.TopK, max) + i] = s.Options.TopK;
            _stepFloats[i] = s.Options.Temperature;
            _stepFloats[max + i] = s.Options.TopP;
            _stepFloats[2 * max + i] = s.Uniform;
        }
        for (int i = 0; i < step.Scores.Count; i++)
        {
            _stepInts[StepInts.Offset(StepInts.LogitRows, max) + samples + i] = step.Scores[i].Row;
            _stepInts[StepInts.Offset(StepInts.Targets, max) + i] = step.Scores[i].Target;
        }
        _b.Upload<int>(_stepInts, _ints.View);
        if (samples > 0) _b.Upload<float>(_stepFloats, _floats.View);
    }

    /// <summary>
    /// Router logits of the normalised input (plus <paramref name="bias"/>, [T, E], when given),
    /// softmax and the top <paramref name="topK"/> into the given buffers.
    /// </summary>
    private void Route(Weight router, Buffer<float> logits, Buffer<int> ids, Buffer<float> weights, int t, int topK, Buffer<float>? bias = null)
    {
        long n = (long)t * _c.NumExperts;
        if (bias is not null) _b.Copy(bias.Slice(0, n), logits.Slice(0, n));
        _b.MatMul(_xn.View, router, logits.View, t, _c.NumExperts, _c.HiddenSize, accumulate: bias is not null);
        _b.SoftmaxTopK(logits.View, ids.View, weights.View, t, _c.NumExperts, topK, _c.NormTopKProb);
    }

    /// <summary>
    /// Waits for the device and reads layer <paramref name="layer"/>'s routing into <see cref="_hostIds"/>,
    /// applies each sequence's hooks to its own rows (random routing, then its observers), and in
    /// reroute mode sends tokens of absent experts to resident ones (writing the new choices back).
    /// </summary>
    private void ReadRouting(StepBatch step, int layer, bool lookahead)
    {
        int t = step.Tokens, k = _c.TopK, e = _c.NumExperts;
        var ids = _hostIds.AsSpan(0, t * k);
        var weights = _hostWeights.AsSpan(0, t * k);
        var router = _hostRouter.AsSpan(0, t * e);
        bool reroute = _experts.OnMiss == MissMode.Reroute;
        bool observed = false, fitting = false, randomized = false;
        foreach (var slice in step.Slices)
        {
            observed |= slice.Hooks?.Routing is not null;
            fitting |= slice.Hooks?.RouterInputs is not null;
        }
        _b.Synchronize();
        _b.Download(_expertIds.Slice(0, t * k), ids);
        foreach (var slice in step.Slices)
        {
            if (slice.Hooks is { } hooks && hooks.RandomRoutingLayer == layer)
            {
                RandomizeRouting(ids.Slice(slice.FirstRow * k, slice.Rows * k), hooks.RoutingNoise!);
                randomized = true;
            }
        }
        if (randomized) _b.Upload<int>(ids, _expertIds.View);
        if (observed || reroute) _b.Download(_expertWeights.Slice(0, t * k), weights);
        if (lookahead) _b.Download(_lookaheadIds.Slice(0, t * _experts.PregateWidth), _hostLookahead.AsSpan(0, t * _experts.PregateWidth));
        foreach (var slice in step.Slices)
            slice.Hooks?.Routing?.OnRouting(layer, ids.Slice(slice.FirstRow * k, slice.Rows * k), weights.Slice(slice.FirstRow * k, slice.Rows * k));
        if (fitting || reroute) _b.Download(_routerLogits.Slice(0, t * e), router);
        if (fitting)
        {
            int h = _c.HiddenSize;
            var input = _hostInput.AsSpan(0, t * h);
            _b.Download(_xn.Slice(0, t * h), input);
            foreach (var slice in step.Slices)
                slice.Hooks?.RouterInputs?.OnRouterInput(layer, input.Slice(slice.FirstRow * h, slice.Rows * h), router.Slice(slice.FirstRow * e, slice.Rows * e));
        }
        if (reroute)
        {
            for (int i = 0; i < t; i++) SoftmaxInPlace(router.Slice(i * e, e)); // logits become probabilities
            if (_experts.Reroute(layer, ids, weights, router, k))
            {
                _b.Upload<int>(ids, _expertIds.View);
                _b.Upload<float>(weights, _expertWeights.View);
            }
        }
    }

    /// <summary>Replaces each token's k experts with k distinct random ones.</summary>
    private void RandomizeRouting(Span<int> ids, Random noise)
    {
        int k = _c.TopK;
        for (int t = 0; t < ids.Length / k; t++)
        {
            var token = ids.Slice(t * k, k);
            for (int j = 0; j < k; j++)
            {
                int e;
                do e = noise.Next(_c.NumExperts); while (token[..j].Contains(e));
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

    /// <summary>Samples the sampled rows, scores the scored rows, waits and reads both back (and any captured logits).</summary>
    private void ReadResults(StepBatch step)
    {
        int samples = step.Samples.Count, scores = step.Scores.Count, vocab = _c.VocabSize;
        if (samples > 0)
        {
            _b.Sample(new SampleOp
            {
                Logits = _logits.View, Tokens = _sampled.View, Temperature = _temperature, TopK = _topK, TopP = _topP, Uniform = _uniform,
                Rows = samples, Vocab = vocab,
            });
        }
        if (scores > 0) _b.NextTokenNll(_logits.Slice((long)samples * vocab, (long)scores * vocab), _targets, _nll.View, scores, vocab);
        _b.Synchronize();
        if (samples > 0) _b.Download(_sampled.Slice(0, samples), step.Sampled.AsSpan(0, samples));
        if (scores == 0) return;
        _b.Download(_nll.Slice(0, scores), step.Nll.AsSpan(0, scores));
        bool capture = false;
        foreach (var s in step.Scores) capture |= s.Logits is not null;
        if (!capture) return;
        _b.Download(_logits.Slice(0, (long)(samples + scores) * vocab), _hostLogits.AsSpan(0, (samples + scores) * vocab));
        for (int i = 0; i < scores; i++)
        {
            if (step.Scores[i].Logits is { } destination)
                _hostLogits.AsSpan((samples + i) * vocab, vocab).CopyTo(destination.AsSpan((int)step.Scores[i].Offset, vocab));
        }
    }

    public void Dispose()
    {
        foreach (var b in _owned) b.Dispose();
        _owned.Clear();
    }
}
