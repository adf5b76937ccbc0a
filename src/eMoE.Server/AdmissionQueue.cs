namespace eMoE.Server;

/// <summary>
/// The bounded queue in front of the engine: at most the engine's batch plus <c>MaxWaiting</c>
/// generation requests are admitted at once; the next is answered 429 with Retry-After (vLLM's
/// load shedding, where llama.cpp queues without bound).
/// </summary>
internal sealed class AdmissionQueue(int capacity, int retryAfterSeconds)
{
    private int _inFlight;

    public int Capacity => capacity;
    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>Admits a request (dispose the lease when it ends), or throws the 429.</summary>
    public Lease Enter()
    {
        if (Interlocked.Increment(ref _inFlight) > capacity)
        {
            Interlocked.Decrement(ref _inFlight);
            throw new ApiException(429, $"The server is busy: {capacity} requests are running or waiting; retry after {retryAfterSeconds} s",
                code: "rate_limit_exceeded")
            {
                Headers = new Dictionary<string, string> { ["Retry-After"] = retryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture) },
            };
        }
        return new Lease(this);
    }

    public sealed class Lease(AdmissionQueue queue) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0) Interlocked.Decrement(ref queue._inFlight);
        }
    }
}
