using System.Text;
using eMoE.Compute;
using eMoE.Inference;
using eMoE.Model;
using Microsoft.Extensions.AI;
using NUnit.Framework;
using AiChatMessage = Microsoft.Extensions.AI.ChatMessage;
using TemplateMessage = eMoE.Model.ChatMessage;

namespace eMoE.Tests.Inference;

/// <summary><see cref="MoeChatClient"/>: IChatClient over the in-process engine, streamed or not, concurrent, with ChatOptions mapped.</summary>
[NonParallelizable]
public sealed class MoeChatClientTests
{
    private MoeModel _model = null!;
    private IChatClient _chat = null!;

    [OneTimeSetUp]
    public void Load()
    {
        _model = MoeModel.Load(RepoPaths.ShippedModel, new ModelOptions { Device = DeviceKind.Cpu });
        _chat = _model.AsChatClient();
    }

    [OneTimeTearDown]
    public void Unload()
    {
        _chat.Dispose();
        _model.Dispose();
    }

    private async Task<(string Text, int Prompt, int Tokens)> ExpectedAsync(string user, int maxTokens, IReadOnlyList<string>? stop = null)
    {
        var prompt = ChatPrompt.Create(_model.RequireTokenizer(), ChatTemplate.ForModel(RepoPaths.ShippedModel), [new TemplateMessage("user", user)]);
        var generation = _model.Generate(prompt.Text, new GenerationOptions { MaxTokens = maxTokens, AddSpecialTokens = prompt.AddedSpecialTokens, StopSequences = stop });
        var text = new StringBuilder();
        await foreach (var token in generation) text.Append(token.Text);
        text.Append(generation.FlushText());
        return (text.ToString(), prompt.Ids.Count, generation.Stats.GeneratedTokens);
    }

    [Test]
    public async Task AResponseIsTheGreedyGenerationOfTheRenderedConversation()
    {
        var expected = await ExpectedAsync("And God said", 10);
        var response = await _chat.GetResponseAsync([new AiChatMessage(ChatRole.User, "And God said")], new ChatOptions { MaxOutputTokens = 10 });
        Assert.That(response.Text, Is.EqualTo(expected.Text));
        Assert.That(response.FinishReason, Is.EqualTo(ChatFinishReason.Length));
        Assert.That(response.Usage!.InputTokenCount, Is.EqualTo(expected.Prompt));
        Assert.That(response.Usage.OutputTokenCount, Is.EqualTo(10));
        Assert.That(response.Usage.TotalTokenCount, Is.EqualTo(expected.Prompt + 10));
        Assert.That(response.ModelId, Is.EqualTo("tiny-mixtral"));
        Assert.That(response.Messages[0].Role, Is.EqualTo(ChatRole.Assistant));
    }

    [Test]
    public async Task StreamingYieldsTheSameTextThenTheFinishAndTheUsage()
    {
        var expected = await ExpectedAsync("And God said", 10);
        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in _chat.GetStreamingResponseAsync([new AiChatMessage(ChatRole.User, "And God said")], new ChatOptions { MaxOutputTokens = 10 }))
            updates.Add(update);
        Assert.That(string.Concat(updates.Select(u => u.Text)), Is.EqualTo(expected.Text));
        Assert.That(updates[^1].FinishReason, Is.EqualTo(ChatFinishReason.Length));
        Assert.That(updates[^1].Contents.OfType<UsageContent>().Single().Details.OutputTokenCount, Is.EqualTo(10));
        var whole = updates.ToChatResponse();
        Assert.That(whole.Text, Is.EqualTo(expected.Text));
        Assert.That(whole.Usage?.OutputTokenCount, Is.EqualTo(10));
    }

    [Test]
    public async Task ConcurrentCallsEachGetTheirOwnAnswer()
    {
        string[] prompts = ["And God said", "In the beginning", "def parse(", "CHAPTER 1", "And it came to pass", "#include <stdio.h>"];
        var expected = new List<string>();
        foreach (string p in prompts) expected.Add((await ExpectedAsync(p, 8)).Text);
        var answers = await Task.WhenAll(Enumerable.Range(0, 12).Select(async i =>
        {
            var messages = new[] { new AiChatMessage(ChatRole.User, prompts[i % prompts.Length]) };
            if (i % 2 == 0) return (await _chat.GetResponseAsync(messages, new ChatOptions { MaxOutputTokens = 8 })).Text;
            var text = new StringBuilder();
            await foreach (var update in _chat.GetStreamingResponseAsync(messages, new ChatOptions { MaxOutputTokens = 8 })) text.Append(update.Text);
            return text.ToString();
        }));
        for (int i = 0; i < answers.Length; i++) Assert.That(answers[i], Is.EqualTo(expected[i % prompts.Length]), $"call {i}");
        for (int i = 0; i < 100 && _model.EngineStats.Running > 0; i++) await Task.Delay(10);
        Assert.That(_model.EngineStats.KvBlocksUsed, Is.Zero);
    }

    [Test]
    public async Task ChatOptionsMapToTheGenerationSettings()
    {
        var full = await ExpectedAsync("And God said", 30);
        int cut = full.Text.IndexOf('\n', StringComparison.Ordinal);
        Assume.That(cut, Is.Positive, "the continuation has a line break");
        var stopped = await _chat.GetResponseAsync([new AiChatMessage(ChatRole.User, "And God said")],
            new ChatOptions { MaxOutputTokens = 30, StopSequences = ["\n"] });
        Assert.That(stopped.Text, Is.EqualTo(full.Text[..cut]));
        Assert.That(stopped.FinishReason, Is.EqualTo(ChatFinishReason.Stop));

        var sampling = new ChatOptions
        {
            Temperature = 0.9f, TopP = 0.9f, TopK = 20, Seed = 1L << 40, MaxOutputTokens = 6,
            AdditionalProperties = new AdditionalPropertiesDictionary { ["task"] = "bible", ["slo_ttft_ms"] = 5000, ["slo_tpot_ms"] = 500.0 },
        };
        var first = await _chat.GetResponseAsync([new AiChatMessage(ChatRole.User, "And God said")], sampling);
        var second = await _chat.GetResponseAsync([new AiChatMessage(ChatRole.User, "And God said")], sampling);
        Assert.That(second.Text, Is.EqualTo(first.Text), "the same seed samples the same");

        var options = MoeChatClient.ToGenerationOptions(sampling, 6);
        Assert.That(options.Task, Is.EqualTo("bible"));
        Assert.That(options.Slo!.TimeToFirstToken, Is.EqualTo(TimeSpan.FromSeconds(5)));
        Assert.That(options.Slo.TimePerOutputToken, Is.EqualTo(TimeSpan.FromMilliseconds(500)));
        Assert.That(options.Sampling, Is.EqualTo(new SamplingOptions { Temperature = 0.9f, TopP = 0.9f, TopK = 20, Seed = SamplingOptions.FoldSeed(1L << 40) }));
    }

    [Test]
    public async Task BadOptionsAndConversationsAreArgumentErrors()
    {
        AiChatMessage[] hi = [new(ChatRole.User, "hi")];
        await Assert.ThrowsAsync<ArgumentException>(() => _chat.GetResponseAsync(hi, new ChatOptions { Temperature = -1 }));
        await Assert.ThrowsAsync<ArgumentException>(() => _chat.GetResponseAsync(hi, new ChatOptions { MaxOutputTokens = 0 }));
        var tooLong = await Assert.ThrowsAsync<ArgumentException>(() => _chat.GetResponseAsync(hi, new ChatOptions { MaxOutputTokens = 1000 }));
        Assert.That(tooLong!.Message, Does.Contain("1000").And.Contain("256"));
        await Assert.ThrowsAsync<ArgumentException>(() => _chat.GetResponseAsync(hi,
            new ChatOptions { AdditionalProperties = new AdditionalPropertiesDictionary { ["slo_ttft_ms"] = -5 } }));
        await Assert.ThrowsAsync<ArgumentException>(() => _chat.GetResponseAsync([]));
        await Assert.ThrowsAsync<TemplateRaisedException>(() => _chat.GetResponseAsync([new AiChatMessage(new ChatRole("wizard"), "hi")]));
        await Assert.ThrowsAsync<NotSupportedException>(() => _chat.GetResponseAsync([new AiChatMessage(ChatRole.User, [new DataContent(new byte[] { 1 }, "image/png")])]));
    }

    [Test]
    public async Task CancellingAStreamFreesTheRequest()
    {
        using var cancel = new CancellationTokenSource();
        int updates = 0;
        await Assert.CatchAsync<OperationCanceledException>(async () =>
        {
            await foreach (var update in _chat.GetStreamingResponseAsync([new AiChatMessage(ChatRole.User, "And God said")], new ChatOptions { MaxOutputTokens = 200 },
                               cancel.Token))
            {
                if (++updates == 3) await cancel.CancelAsync();
            }
        });
        for (int i = 0; i < 200 && _model.EngineStats.Running > 0; i++) await Task.Delay(10);
        Assert.That(_model.EngineStats.Running, Is.Zero);
        Assert.That(_model.EngineStats.KvBlocksUsed, Is.Zero);
        Assert.That(_chat.GetService<MoeModel>(), Is.SameAs(_model));
        Assert.That(_chat.GetService<ChatClientMetadata>()!.ProviderName, Is.EqualTo("eMoE"));
    }
}
