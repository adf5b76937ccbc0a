using System.Runtime.InteropServices;
using System.Threading.Channels;
using eMoE.Prediction;
using eMoE.Scheduling;

namespace eMoE.Inference;

/// <summary>
/// What belongs to one request and nothing else: its tokens, how many of them have keys and values
/// in the KV cache, its KV block table, its hooks, its task, SLO and timings. The model holds
/// weights; the engine holds the running sequences; only the engine loop mutates a sequence.
/// A step feeds the sequence's next known tokens; when a step feeds its last known token the
/// sequence wants that row's logits (to sample, or to score). Preemption drops the KV blocks and
/// feeds every token again later (recompute), which gives the same keys and values.
/// </summary>
internal abstract class Sequence : IScheduledRequest
{
    private readonly List<int> _tokens;

    protected Sequence(long id, IReadOnlyList<int> tokens, string? task, Slo? slo, TimeSpan arrivedAt, SequenceHooks? hooks, CancellationToken cancellation)
    {
        Id = id;
        _tokens = [.. tokens];
        PromptLength = tokens.Count;
        Task = task;
        Slo = slo;
        ArrivedAt = arrivedAt;
        Hooks = hooks;
        Cancellation = cancellation;
    }

    /// <inheritdoc/>
    public long Id { get; }

    /// <inheritdoc/>
    public string? Task { get; }

    /// <inheritdoc/>
    public Slo? Slo { get; }

    /// <inheritdoc/>
    public TimeSpan ArrivedAt { get; }

    /// <summary>The caller's cancellation; the engine frees the sequence within one step of it.</summary>
    public CancellationToken Cancellation { get; }

    /// <summary>Hooks for the forward pass; they see each position once (not again when recomputed).</summary>
    public SequenceHooks? Hooks { get; }

    /// <summary>Tokens of the prompt (or of the scored window).</summary>
    public int PromptLength { get; }

    /// <summary>Every known token: the prompt, then what was generated.</summary>
    public IReadOnlyList<int> Tokens => _tokens;

    /// <summary>Tokens whose keys and values are in the KV cache (positions 0..Fed-1).</summary>
    public int Fed { get; private set; }

    /// <summary>Most tokens ever fed: positions below it were computed before a preemption.</summary>
    public int HighWater { get; private set; }

    /// <summary>The sequence's KV blocks, in position order.</summary>
    public List<int> Blocks { get; } = [];

    /// <summary>Times the sequence was preempted (its KV blocks dropped, to be recomputed).</summary>
    public int Preemptions { get; private set; }

    /// <summary>When it was first admitted (engine clock); null while it has never run.</summary>
    public TimeSpan? AdmittedAt { get; set; }

    /// <summary>
    /// Set once the engine has let the predictor see this request's start; set from the start for
    /// work that is not a request of a task (pre-gate fitting), which the predictor never sees.
    /// </summary>
    public bool Planned { get; set; }

    /// <summary>The engine's registration on <see cref="Cancellation"/>, disposed when the sequence ends.</summary>
    public CancellationTokenRegistration Registration { get; set; }

    /// <summary>Set once the request's prompt has been fed the first time (the predictor's after-prefill point).</summary>
    public bool PrefillSeen { get; set; }

    /// <summary>The routing recorder in <see cref="Hooks"/>, when the request's routing is recorded.</summary>
    public TraceRecorder? Recorder => Hooks?.Routing as TraceRecorder;

    /// <inheritdoc/>
    public int PromptTokens => _tokens.Count - Fed;

    /// <inheritdoc/>
    public abstract int MaxTokens { get; }

    /// <inheritdoc/>
    public int GeneratedTokens => _tokens.Count - PromptLength;

    /// <summary>Tokens [start, start + count) of <see cref="Tokens"/>, without a copy.</summary>
    public ReadOnlySpan<int> TokenSpan(int start, int count) => CollectionsMarshal.AsSpan(_tokens).Slice(start, count);

    /// <summary>The engine loop's mark: rows this sequence has in the step being built (0: not in it).</summary>
    public int StepRows { get; set; }

    /// <inheritdoc/>
    public virtual TimeSpan? FirstTokenAt => null;

    /// <summary>Known tokens not yet fed.</summary>
    public int Pending => _tokens.Count - Fed;

    /// <summary>Whether the sequence has finished (completed, cancelled or failed).</summary>
    public abstract bool Finished { get; }

    /// <summary>
    /// The most tokens the next step may feed: the pending ones, and when recomputing, no further
    /// than <see cref="HighWater"/>, so a slice is either all recompute or all new (hooks see new ones only).
    /// </summary>
    public int NextChunk(int room)
    {
        int n = Math.Min(room, Pending);
        if (Fed < HighWater) n = Math.Min(n, HighWater - Fed);
        return n;
    }

    /// <summary>The hooks for a slice starting at <paramref name="start"/>: none for recomputed positions.</summary>
    public SequenceHooks? HooksAt(int start) => start >= HighWater ? Hooks : null;

    /// <summary>Adds the rows of the slice just placed in <paramref name="step"/> whose logits this sequence wants.</summary>
    public abstract void RequestLogits(StepBatch step, int firstRow, int rows);

    /// <summary>The step ran: <paramref name="rows"/> more tokens are in the cache.</summary>
    public void Advance(int rows)
    {
        Fed += rows;
        HighWater = Math.Max(HighWater, Fed);
    }

    /// <summary>Appends a generated token (not yet fed).</summary>
    protected void Append(int token) => _tokens.Add(token);

    /// <summary>Drops the KV cache state (the engine has released the blocks): every token is fed again later.</summary>
    public void Preempt()
    {
        Fed = 0;
        Preemptions++;
    }

    /// <summary>
    /// Tells the caller the finished request is done. The engine calls it after releasing the
    /// sequence's KV blocks, so a caller that sees the end sees its blocks free.
    /// </summary>
    public abstract void Complete();

    /// <summary>Ends the sequence without a result: the caller cancelled, or the engine failed or stopped.</summary>
    public abstract void Abort(Exception? error);
}

/// <summary>One token on its way to the caller, with when it was chosen on the engine's clock.</summary>
internal readonly record struct TokenEvent(int Token, TimeSpan At);

/// <summary>A generation request: samples after its last known token until a stop condition.</summary>
internal sealed class GenerationSequence : Sequence
{
    private readonly GenerationOptions _options;
    private readonly IReadOnlySet<int> _eos;
    private readonly int _contextLength;
    private readonly Random _random;
    private TimeSpan? _firstTokenAt;
    private readonly Channel<TokenEvent> _output = Channel.CreateUnbounded<TokenEvent>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    private int _sampleIndex = -1;

    public GenerationSequence(long id, IReadOnlyList<int> prompt, GenerationOptions options, IReadOnlySet<int> eos, int contextLength, TimeSpan arrivedAt,
        SequenceHooks? hooks, CancellationToken cancellation)
        : base(id, prompt, options.Task, options.Slo, arrivedAt, hooks, cancellation)
    {
        _options = options;
        _eos = eos;
        _contextLength = contextLength;
        _random = options.Sampling.Seed is int seed ? new Random(seed) : new Random();
    }

    /// <summary>The tokens as the engine chooses them; completed when the sequence finishes.</summary>
    public ChannelReader<TokenEvent> Output => _output.Reader;

    /// <summary>Why it ended; <see cref="FinishReason.None"/> while running.</summary>
    public FinishReason FinishReason { get; private set; }

    /// <summary>Tokens sampled, an end-of-sequence token included (it is not streamed).</summary>
    public int SampledTokens { get; private set; }

    /// <summary>When the last token was sampled (engine clock).</summary>
    public TimeSpan? LastSampleAt { get; private set; }

    /// <inheritdoc/>
    public override TimeSpan? FirstTokenAt => _firstTokenAt;

    /// <inheritdoc/>
    public override int MaxTokens => _options.MaxTokens;

    /// <inheritdoc/>
    public override bool Finished => FinishReason != FinishReason.None;

    /// <inheritdoc/>
    public override void RequestLogits(StepBatch step, int firstRow, int rows)
    {
        _sampleIndex = -1;
        if (Fed + rows < Tokens.Count) return; // a prefill chunk short of the last known token
        _sampleIndex = step.Samples.Count;
        // One draw per sampled token, in order, from the request's own generator: the same seed gives the same text in any batch.
        step.Samples.Add(new SampleRow(firstRow + rows - 1, _options.Sampling, (float)_random.NextDouble()));
    }

    /// <summary>
    /// After <see cref="Sequence.Advance"/>: takes the sampled token if this step sampled, streams
    /// it, and finishes on end of sequence, the token limit or a full context. Returns whether a token was sampled.
    /// </summary>
    public bool TakeSample(StepBatch step, TimeSpan now)
    {
        if (_sampleIndex < 0) return false;
        int token = step.Sampled[_sampleIndex];
        _sampleIndex = -1;
        SampledTokens++;
        LastSampleAt = now;
        _firstTokenAt ??= now;
        if (_options.StopAtEndOfSequence && _eos.Contains(token))
        {
            Finish(FinishReason.EndOfSequence);
            return true;
        }
        Append(token);
        _output.Writer.TryWrite(new TokenEvent(token, now));
        if (GeneratedTokens >= _options.MaxTokens) Finish(FinishReason.MaxTokens);
        else if (Tokens.Count > _contextLength) Finish(FinishReason.ContextFull); // the new token has no position to be fed at
        return true;
    }

    /// <summary>Marks the request done; its stream ends in <see cref="Complete"/>, once the engine has freed it.</summary>
    private void Finish(FinishReason reason) => FinishReason = reason;

    /// <inheritdoc/>
    public override void Complete() => _output.Writer.TryComplete();

    /// <inheritdoc/>
    public override void Abort(Exception? error)
    {
        if (Finished) return;
        FinishReason = FinishReason.Cancelled;
        _output.Writer.TryComplete(error);
    }
}

/// <summary>
/// A scoring request: a window of known tokens, each row scored against the next token (and its
/// logits optionally captured), or only run for its hooks; it ends when the whole window has been fed.
/// </summary>
internal sealed class ScoringSequence : Sequence
{
    private readonly float[]? _logits;
    private readonly bool _score;
    private readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _firstScore = -1, _scoreCount;

    /// <param name="id">Arrival order.</param>
    /// <param name="window">The tokens.</param>
    /// <param name="task">Task label (for prediction), or null.</param>
    /// <param name="arrivedAt">Engine clock at submission.</param>
    /// <param name="hooks">Observers, random routing.</param>
    /// <param name="logits">When given, every row's logits are copied here ([window, V]); the last row is then scored too (against nothing: its NLL is not used).</param>
    /// <param name="score">False: only run the window (its hooks watch); no logits are computed.</param>
    /// <param name="cancellation">The caller's cancellation.</param>
    public ScoringSequence(long id, IReadOnlyList<int> window, string? task, TimeSpan arrivedAt, SequenceHooks? hooks, float[]? logits, bool score,
        CancellationToken cancellation)
        : base(id, window, task, null, arrivedAt, hooks, cancellation)
    {
        _logits = logits;
        _score = score;
    }

    /// <summary>Sum of -log p(next token) over the rows scored so far.</summary>
    public double NllSum { get; private set; }

    /// <summary>Rows scored so far (every position but the last).</summary>
    public long Scored { get; private set; }

    /// <summary>Completes when the window has been fed and the engine has freed it (or faults when the engine fails).</summary>
    public Task Completion => _done.Task;

    /// <inheritdoc/>
    public override int MaxTokens => 0;

    /// <inheritdoc/>
    public override bool Finished => Fed == PromptLength || _done.Task.IsCompleted;

    /// <inheritdoc/>
    public override void RequestLogits(StepBatch step, int firstRow, int rows)
    {
        _firstScore = step.Scores.Count;
        _scoreCount = 0;
        if (!_score || Fed < HighWater) return; // not scoring, or recomputing rows already scored before a preemption
        int vocab = _logits is null ? 0 : _logits.Length / PromptLength;
        for (int i = 0; i < rows; i++)
        {
            int position = Fed + i;
            bool hasNext = position + 1 < PromptLength;
            if (!hasNext && _logits is null) continue; // the window's last token predicts nothing
            step.Scores.Add(new ScoreRow(firstRow + i, hasNext ? Tokens[position + 1] : Tokens[position], _logits, (long)position * vocab));
            _scoreCount++;
        }
    }

    /// <summary>Before <see cref="Sequence.Advance"/>: adds this step's scores (the window is done once it has all been fed).</summary>
    public void TakeScores(StepBatch step, int rows)
    {
        for (int i = 0; i < _scoreCount; i++)
        {
            if (Fed + i + 1 >= PromptLength) continue; // a captured last row: no next token
            NllSum += step.Nll[_firstScore + i];
            Scored++;
        }
        _scoreCount = 0;
    }

    /// <inheritdoc/>
    public override void Complete() => _done.TrySetResult();

    /// <inheritdoc/>
    public override void Abort(Exception? error)
    {
        if (error is null) _done.TrySetCanceled(Cancellation.IsCancellationRequested ? Cancellation : new CancellationToken(true));
        else _done.TrySetException(error);
    }
}
