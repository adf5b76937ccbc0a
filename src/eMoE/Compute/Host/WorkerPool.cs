using System.Diagnostics;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;

namespace eMoE.Compute.Host;

/// <summary>
/// Persistent worker threads for the host kernels: <see cref="Threads"/> - 1 workers, the calling
/// thread being the last participant. A job is a function pointer, an opaque state pointer and a
/// range split into contiguous chunks that the participants claim one at a time, so a late or
/// preempted worker only delays the chunks it holds. No allocation per job. Idle workers spin
/// for about <see cref="SpinMicroseconds"/> after their last job (so back-to-back operations
/// dispatch in a few microseconds), then block until the next one.
/// </summary>
/// <remarks>
/// A job claims chunks through one 64-bit ticket (job generation in the high half, next chunk in
/// the low half), so a worker that wakes up late can never take a chunk of a newer job with an
/// older job's parameters; the caller closes the old ticket before it writes a new job's fields. Nested or concurrent calls (a body calling <see cref="For"/>, two
/// threads sharing a pool) run inline instead of waiting on each other.
/// </remarks>
internal sealed unsafe class WorkerPool : IDisposable
{
    /// <summary>How long an idle worker spins before it blocks.</summary>
    public const int SpinMicroseconds = 1000;

    /// <summary>
    /// Chunks per participant, for load balance (a participant that is descheduled mid-job delays
    /// only the chunk it holds); each chunk is still contiguous. Claiming one costs ~0.1 us.
    /// </summary>
    private const int ChunksPerThread = 8;

    private readonly Thread[] _workers;
    private readonly object _gate = new();
    private readonly long _spinTicks;
    private Shared _s;

    // The current job; written by the caller before the ticket publishes it, read by a worker only
    // after it has claimed one of the job's chunks (the job cannot end before that chunk does).
    private delegate*<void*, int, int, void> _body;
    private void* _state;
    private int _count, _chunks;
    private Exception? _error;
    private volatile bool _stop;

    /// <summary>The fields that participants write, each on its own cache line.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 256)]
    private struct Shared
    {
        /// <summary>Job generation (high 32 bits) and the next chunk to claim (low 32 bits).</summary>
        [FieldOffset(64)] public long Ticket;
        /// <summary>Chunks of the current job finished.</summary>
        [FieldOffset(128)] public int Done;
        /// <summary>Workers blocked on the gate.</summary>
        [FieldOffset(192)] public int Sleepers;
        /// <summary>1 while a job is in flight (others run inline).</summary>
        [FieldOffset(196)] public int Busy;
    }

    /// <summary>Starts <paramref name="threads"/> - 1 workers.</summary>
    /// <param name="threads">Participants in a job, the caller included; 1 runs everything inline.</param>
    public WorkerPool(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        Threads = threads;
        _spinTicks = Environment.ProcessorCount > 1 ? Stopwatch.Frequency * SpinMicroseconds / 1_000_000 : 0;
        _workers = new Thread[threads - 1];
        for (int i = 0; i < _workers.Length; i++)
        {
            _workers[i] = new Thread(Work) { IsBackground = true, Name = $"eMoE host worker {i + 1}" };
            _workers[i].Start();
        }
    }

    /// <summary>Participants in a job, the calling thread included.</summary>
    public int Threads { get; }

    /// <summary>
    /// When true, the host kernels spread even work too small to repay a dispatch (so that tests
    /// run their parallel paths on small shapes). Default false.
    /// </summary>
    public bool ParallelizeSmall { get; init; }

    /// <summary>
    /// Runs <paramref name="body"/>(state, start, end) over [0, <paramref name="count"/>) split into
    /// contiguous chunks, and returns when all are done. Runs inline (one call over the whole range)
    /// when count &lt; <paramref name="minParallel"/>, when <see cref="Threads"/> is 1, or when another
    /// job of this pool is in flight. The first exception a chunk throws is rethrown here after every
    /// chunk has finished; the pool stays usable.
    /// </summary>
    public void For(int count, delegate*<void*, int, int, void> body, void* state, int minParallel = 1)
    {
        ObjectDisposedException.ThrowIf(_stop, this);
        if (count <= 0) return;
        if (count < minParallel || count < 2 || _workers.Length == 0 || Interlocked.CompareExchange(ref _s.Busy, 1, 0) != 0)
        {
            body(state, 0, count);
            return;
        }
        try
        {
            int chunks = Math.Min(count, Threads * ChunksPerThread);
            // Close the previous job's ticket before its fields change: a worker still looking at it
            // (it read the ticket after the last chunk was claimed) would otherwise check the chunk
            // against the new job's count, claim a chunk with the old ticket, and run it with the new
            // job's parameters, twice over with the caller. The closing generation has no chunk left;
            // the job is published under the next one, so no waiting worker mistakes one for the other.
            int generation = (int)(_s.Ticket >> 32) + 2;
            Interlocked.Exchange(ref _s.Ticket, ((long)(generation - 1) << 32) | int.MaxValue);
            _body = body;
            _state = state;
            _count = count;
            _chunks = chunks;
            _error = null;
            _s.Done = 0;
            Interlocked.Exchange(ref _s.Ticket, (long)generation << 32); // publishes the job (full fence before reading Sleepers)
            if (Volatile.Read(ref _s.Sleepers) != 0)
            {
                lock (_gate) Monitor.PulseAll(_gate);
            }
            RunChunks(generation);
            var spin = new SpinWait();
            while (Volatile.Read(ref _s.Done) < chunks) spin.SpinOnce(sleep1Threshold: -1);
            if (_error is { } error)
            {
                _error = null;
                ExceptionDispatchInfo.Capture(error).Throw();
            }
        }
        finally
        {
            _body = null;
            _state = null;
            Volatile.Write(ref _s.Busy, 0);
        }
    }

    /// <summary>Claims and runs chunks of job <paramref name="generation"/> until none is left.</summary>
    private void RunChunks(int generation)
    {
        long ticket = Volatile.Read(ref _s.Ticket);
        while (true)
        {
            if ((int)(ticket >> 32) != generation) return;
            int chunk = (int)ticket;
            // The job is still in flight while its ticket is current; its chunk count is stable.
            if (chunk >= Volatile.Read(ref _chunks)) return;
            long seen = Interlocked.CompareExchange(ref _s.Ticket, ticket + 1, ticket);
            if (seen != ticket)
            {
                ticket = seen;
                continue;
            }
            // Chunk claimed: the job cannot finish (nor its fields change) until it is done.
            int chunks = _chunks, count = _count;
            int start = (int)((long)chunk * count / chunks), end = (int)((long)(chunk + 1) * count / chunks);
            try
            {
                _body(_state, start, end);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref _error, e, null);
            }
            Interlocked.Increment(ref _s.Done);
            ticket = Volatile.Read(ref _s.Ticket);
        }
    }

    private void Work()
    {
        int seen = (int)(Volatile.Read(ref _s.Ticket) >> 32);
        while (true)
        {
            int generation = WaitForJob(seen);
            if (_stop) return;
            seen = generation;
            RunChunks(generation);
        }
    }

    /// <summary>Spins for a while, then blocks, until a job newer than <paramref name="seen"/> is published.</summary>
    private int WaitForJob(int seen)
    {
        long deadline = Stopwatch.GetTimestamp() + _spinTicks;
        for (int i = 0; ; i++)
        {
            int generation = (int)(Volatile.Read(ref _s.Ticket) >> 32);
            if (generation != seen || _stop) return generation;
            if ((i & 63) == 63)
            {
                if (Stopwatch.GetTimestamp() > deadline) break;
                // Every few tens of microseconds, give the core away if anything else wants it (the
                // caller itself, when the machine has fewer free cores than the pool has threads).
                if ((i & 255) == 255) Thread.Yield();
            }
            Thread.SpinWait(8);
        }
        lock (_gate)
        {
            Interlocked.Increment(ref _s.Sleepers); // full fence before reading the ticket (pairs with the caller's exchange)
            try
            {
                while (true)
                {
                    int generation = (int)(Volatile.Read(ref _s.Ticket) >> 32);
                    if (generation != seen || _stop) return generation;
                    Monitor.Wait(_gate);
                }
            }
            finally
            {
                Interlocked.Decrement(ref _s.Sleepers);
            }
        }
    }

    /// <summary>Stops the workers and waits for them to exit.</summary>
    public void Dispose()
    {
        if (_stop) return;
        _stop = true; // spinning workers see it; blocked ones are woken
        lock (_gate) Monitor.PulseAll(_gate);
        foreach (var worker in _workers) worker.Join();
    }
}
