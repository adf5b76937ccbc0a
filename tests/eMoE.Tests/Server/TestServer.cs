using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using eMoE.Compute;
using eMoE.Inference;
using eMoE.Server;
using NUnit.Framework;

namespace eMoE.Tests.Server;

/// <summary>The real server on 127.0.0.1 (a port Kestrel picks) over the shipped model on the host backend, with a raw HttpClient.</summary>
internal sealed class TestServer : IAsyncDisposable
{
    public const string ModelName = "tiny-mixtral";

    private TestServer(EmoeServer server, HttpClient http)
    {
        Server = server;
        Http = http;
    }

    public EmoeServer Server { get; }
    public HttpClient Http { get; }
    public Uri BaseAddress => Server.BaseAddress;
    public MoeModel Model => Server.Model ?? throw new InvalidOperationException("the model is not loaded");

    public static ServerOptions DefaultOptions => new()
    {
        ModelDirectory = RepoPaths.ShippedModel,
        Model = new ModelOptions { Device = DeviceKind.Cpu },
        Port = 0,
    };

    public static async Task<TestServer> StartAsync(Func<ServerOptions, ServerOptions>? configure = null, bool waitForModel = true)
    {
        var options = configure is null ? DefaultOptions : configure(DefaultOptions);
        var server = EmoeServer.Build(options);
        await server.StartAsync();
        if (waitForModel) await server.ModelLoaded.WaitAsync(TimeSpan.FromSeconds(60));
        var http = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        return new TestServer(server, http);
    }

    public Task<HttpResponseMessage> PostAsync(string path, string json, string? apiKey = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        if (apiKey is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        return Http.SendAsync(request);
    }

    public async Task<JsonElement> PostJsonAsync(string path, string json)
    {
        using var response = await PostAsync(path, json);
        string body = await response.Content.ReadAsStringAsync();
        Assert.That((int)response.StatusCode, Is.EqualTo(200), body);
        return JsonDocument.Parse(body).RootElement.Clone();
    }

    /// <summary>The Prometheus text of /metrics as sample name (with labels) to value.</summary>
    public async Task<Dictionary<string, double>> MetricsAsync()
    {
        string text = await Http.GetStringAsync("/metrics");
        var samples = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (string line in text.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#') continue;
            int space = line.LastIndexOf(' ');
            samples[line[..space]] = double.Parse(line[(space + 1)..], CultureInfo.InvariantCulture);
        }
        return samples;
    }

    /// <summary>Waits until the engine runs nothing and the server holds no request (a disconnected client's request is freed).</summary>
    public async Task WaitIdleAsync(TimeSpan? within = null)
    {
        var deadline = DateTime.UtcNow + (within ?? TimeSpan.FromSeconds(10));
        while (DateTime.UtcNow < deadline)
        {
            var stats = Model.EngineStats;
            if (stats.Running == 0 && stats.Waiting == 0 && stats.KvBlocksUsed == 0 && Server.RequestsInFlight == 0) return;
            await Task.Delay(10);
        }
        var s = Model.EngineStats;
        Assert.Fail($"not idle: running {s.Running}, waiting {s.Waiting}, KV blocks {s.KvBlocksUsed}, in flight {Server.RequestsInFlight}");
    }

    /// <summary>Reads Server-Sent Events until [DONE] (or the end): each event's JSON.</summary>
    public static async Task<(List<JsonElement> Events, bool Done)> ReadEventsAsync(HttpResponseMessage response)
    {
        var events = new List<JsonElement>();
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        while (await reader.ReadLineAsync() is string line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
            string data = line["data: ".Length..];
            if (data == "[DONE]") return (events, true);
            events.Add(JsonDocument.Parse(data).RootElement.Clone());
        }
        return (events, false);
    }

    public async ValueTask DisposeAsync()
    {
        await Server.DisposeAsync();
        Http.Dispose();
    }
}
