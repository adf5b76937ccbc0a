using System.ClientModel;
using System.ClientModel.Primitives;
using System.Text;
using System.Text.Json;
using eMoE.Model;
using Microsoft.Extensions.AI;
using NUnit.Framework;
using OpenAI;
using OpenAI.Chat;
using AiChatMessage = Microsoft.Extensions.AI.ChatMessage;
using OpenAiFinish = OpenAI.Chat.ChatFinishReason;
using TemplateMessage = eMoE.Model.ChatMessage;

namespace eMoE.Tests.Server;

/// <summary>
/// The official OpenAI .NET client (OpenAI 2.x) and Microsoft.Extensions.AI.OpenAI against the server on
/// loopback: chat, streaming with usage, completions, models, and errors surfaced as exceptions with
/// the server's message. Greedy answers equal the library's own.
/// </summary>
[NonParallelizable]
public sealed class OpenAiClientTests
{
    private const string Key = "sk-test-key";
    private TestServer _server = null!;
    private OpenAIClient _client = null!;

    [OneTimeSetUp]
    public async Task Start()
    {
        _server = await TestServer.StartAsync(o => o with { ApiKey = Key });
        _client = new OpenAIClient(new ApiKeyCredential(Key), new OpenAIClientOptions
        {
            Endpoint = new Uri(_server.BaseAddress, "v1"),
            RetryPolicy = new ClientRetryPolicy(maxRetries: 0),
        });
    }

    [OneTimeTearDown]
    public async Task Stop() => await _server.DisposeAsync();

    private async Task<string> ExpectedChatAsync(int maxTokens, params TemplateMessage[] messages)
    {
        var prompt = eMoE.Inference.ChatPrompt.Create(_server.Model.RequireTokenizer(), ChatTemplate.ForModel(RepoPaths.ShippedModel), messages);
        return (await ServerTests.ReferenceAsync(_server.Model, prompt.Text, prompt.AddedSpecialTokens, maxTokens)).Text;
    }

    [Test]
    public async Task ChatCompletionEqualsTheLibrarysGreedyAnswer()
    {
        string expected = await ExpectedChatAsync(10, new TemplateMessage("system", "Be brief."), new TemplateMessage("user", "And God said"));
        var chat = _client.GetChatClient(TestServer.ModelName);
        ChatCompletion completion = await chat.CompleteChatAsync(
            [new SystemChatMessage("Be brief."), new UserChatMessage("And God said")],
            new ChatCompletionOptions { Temperature = 0f, MaxOutputTokenCount = 10 });
        Assert.That(completion.Content[0].Text, Is.EqualTo(expected));
        Assert.That(completion.FinishReason, Is.EqualTo(OpenAiFinish.Length));
        Assert.That(completion.Role, Is.EqualTo(ChatMessageRole.Assistant));
        Assert.That(completion.Model, Is.EqualTo(TestServer.ModelName));
        Assert.That(completion.Usage.OutputTokenCount, Is.EqualTo(10));
        Assert.That(completion.Usage.TotalTokenCount, Is.EqualTo(completion.Usage.InputTokenCount + 10));
    }

    [Test]
    public async Task StreamingChatCarriesTheSameTextAndTheUsage()
    {
        string expected = await ExpectedChatAsync(10, new TemplateMessage("user", "And God said"));
        var chat = _client.GetChatClient(TestServer.ModelName);
        var text = new StringBuilder();
        ChatTokenUsage? usage = null;
        OpenAiFinish? finish = null;
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage("And God said")],
                           new ChatCompletionOptions { Temperature = 0f, MaxOutputTokenCount = 10 }))
        {
            foreach (var part in update.ContentUpdate) text.Append(part.Text);
            usage ??= update.Usage;
            finish ??= update.FinishReason;
        }
        Assert.That(text.ToString(), Is.EqualTo(expected));
        Assert.That(finish, Is.EqualTo(OpenAiFinish.Length));
        Assert.That(usage, Is.Not.Null);
        Assert.That(usage!.OutputTokenCount, Is.EqualTo(10));
    }

    [Test]
    public async Task CompletionsThroughTheClientsPipeline()
    {
        // OpenAI 2.x keeps its legacy completions client internal: the request goes through the client's own pipeline (auth, errors).
        string expected = (await ServerTests.ReferenceAsync(_server.Model, "And God said", true, 8)).Text;
        var answer = await SendAsync("completions", """{"model":"tiny-mixtral","prompt":"And God said","max_tokens":8,"temperature":0}""");
        Assert.That(answer.GetProperty("choices")[0].GetProperty("text").GetString(), Is.EqualTo(expected));
        Assert.That(answer.GetProperty("usage").GetProperty("completion_tokens").GetInt32(), Is.EqualTo(8));
        var error = await Assert.ThrowsAsync<ClientResultException>(() => SendAsync("completions", """{"prompt":"x","max_tokens":-3}"""));
        Assert.That(error!.Status, Is.EqualTo(400));
        Assert.That(error.GetRawResponse()!.Content.ToString(), Does.Contain("'max_tokens' must be at least 1, got -3"));
    }

    private async Task<JsonElement> SendAsync(string path, string json)
    {
        var message = _client.Pipeline.CreateMessage();
        message.Request.Method = "POST";
        message.Request.Uri = new Uri(_server.BaseAddress, "v1/" + path);
        message.Request.Headers.Set("Content-Type", "application/json");
        message.Request.Content = BinaryContent.Create(BinaryData.FromString(json));
        message.ResponseClassifier = PipelineMessageClassifier.Create(stackalloc ushort[] { 200 });
        await _client.Pipeline.SendAsync(message);
        var response = message.Response!;
        if (response.IsError) throw await ClientResultException.CreateAsync(response);
        return JsonDocument.Parse(response.Content.ToString()).RootElement.Clone();
    }

    [Test]
    public async Task ModelsListTheServedModel()
    {
        var models = _client.GetOpenAIModelClient();
        var list = (await models.GetModelsAsync()).Value;
        Assert.That(list.Select(m => m.Id), Is.EqualTo(new[] { TestServer.ModelName }));
        var one = (await models.GetModelAsync(TestServer.ModelName)).Value;
        Assert.That(one.OwnedBy, Is.EqualTo("emoe"));
        var missing = await Assert.ThrowsAsync<ClientResultException>(() => models.GetModelAsync("gpt-4"));
        Assert.That(missing!.Status, Is.EqualTo(404));
    }

    [Test]
    public async Task ErrorsSurfaceAsExceptionsWithTheServersMessage()
    {
        var chat = _client.GetChatClient(TestServer.ModelName);
        var tooLong = await Assert.ThrowsAsync<ClientResultException>(() => chat.CompleteChatAsync([new UserChatMessage("hi")],
            new ChatCompletionOptions { MaxOutputTokenCount = 1000 }));
        Assert.That(tooLong!.Status, Is.EqualTo(400));
        Assert.That(tooLong.Message, Does.Contain("maximum context length is 256 tokens").And.Contain("1000 for the completion"));

        var unknown = await Assert.ThrowsAsync<ClientResultException>(() => _client.GetChatClient("gpt-4").CompleteChatAsync([new UserChatMessage("hi")]));
        Assert.That(unknown!.Status, Is.EqualTo(404));
        Assert.That(unknown.Message, Does.Contain("The model 'gpt-4' does not exist"));

        var hot = await Assert.ThrowsAsync<ClientResultException>(() => chat.CompleteChatAsync([new UserChatMessage("hi")], new ChatCompletionOptions { Temperature = 5f }));
        Assert.That(hot!.Message, Does.Contain("'temperature' must be a number between 0 and 2"));

        var wrongKey = new OpenAIClient(new ApiKeyCredential("sk-wrong"), new OpenAIClientOptions
        {
            Endpoint = new Uri(_server.BaseAddress, "v1"),
            RetryPolicy = new ClientRetryPolicy(maxRetries: 0),
        });
        var denied = await Assert.ThrowsAsync<ClientResultException>(() => wrongKey.GetChatClient(TestServer.ModelName).CompleteChatAsync([new UserChatMessage("hi")]));
        Assert.That(denied!.Status, Is.EqualTo(401));
        Assert.That(denied.Message, Does.Contain("Incorrect API key"));
    }

    [Test]
    public async Task MicrosoftExtensionsAiOverTheServer()
    {
        string expected = await ExpectedChatAsync(8, new TemplateMessage("user", "And God said"));
        IChatClient chat = _client.GetChatClient(TestServer.ModelName).AsIChatClient();
        var options = new ChatOptions { Temperature = 0f, MaxOutputTokens = 8 };
        var response = await chat.GetResponseAsync([new AiChatMessage(ChatRole.User, "And God said")], options);
        Assert.That(response.Text, Is.EqualTo(expected));
        Assert.That(response.FinishReason, Is.EqualTo(Microsoft.Extensions.AI.ChatFinishReason.Length));
        Assert.That(response.Usage!.OutputTokenCount, Is.EqualTo(8));

        var streamed = new StringBuilder();
        UsageDetails? usage = null;
        await foreach (var update in chat.GetStreamingResponseAsync([new AiChatMessage(ChatRole.User, "And God said")], options))
        {
            streamed.Append(update.Text);
            usage ??= update.Contents.OfType<UsageContent>().FirstOrDefault()?.Details;
        }
        Assert.That(streamed.ToString(), Is.EqualTo(expected));
        Assert.That(usage?.OutputTokenCount, Is.EqualTo(8), "the client asks for include_usage");

        var error = await Assert.ThrowsAsync<ClientResultException>(() => chat.GetResponseAsync([new AiChatMessage(ChatRole.User, "hi")],
            new ChatOptions { TopP = 0f }));
        Assert.That(error!.Message, Does.Contain("'top_p' must be a number in (0, 1]"));
    }
}
