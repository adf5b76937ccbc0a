using eMoE.Model;

namespace eMoE.Inference;

/// <summary>
/// A conversation made into a prompt: the text the chat template renders (with the generation
/// prompt) and its token ids.
/// </summary>
/// <param name="Text">The rendered prompt.</param>
/// <param name="Ids">Its tokens.</param>
/// <param name="AddedSpecialTokens">Whether the tokenizer's special tokens (BOS) were added around the text.</param>
public sealed record ChatPrompt(string Text, IReadOnlyList<int> Ids, bool AddedSpecialTokens)
{
    /// <summary>
    /// Renders <paramref name="messages"/> with <paramref name="template"/> (<c>add_generation_prompt</c>
    /// true) and tokenizes the text. The tokenizer's special tokens (BOS, as its configuration says)
    /// are added unless the text already starts with the template's BOS token, so a template that
    /// writes <c>{{ bos_token }}</c> does not get a second one (llama.cpp's rule); the plain fallback
    /// writes none, so the tokenizer adds it.
    /// </summary>
    /// <exception cref="TemplateRaisedException">The template refused the conversation.</exception>
    /// <exception cref="ChatTemplateException">The template failed on these messages.</exception>
    public static ChatPrompt Create(MoeTokenizer tokenizer, ChatTemplate template, IReadOnlyList<ChatMessage> messages)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(template);
        string text = template.Render(messages, new ChatTemplateOptions { AddGenerationPrompt = true });
        bool special = AddsSpecialTokens(template, text);
        return new ChatPrompt(text, tokenizer.Encode(text, special), special);
    }

    /// <summary>Whether a rendered prompt gets the tokenizer's special tokens: unless it starts with the template's BOS token.</summary>
    public static bool AddsSpecialTokens(ChatTemplate template, string text)
    {
        ArgumentNullException.ThrowIfNull(template);
        ArgumentNullException.ThrowIfNull(text);
        return template.BosToken is not { Length: > 0 } bos || !text.StartsWith(bos, StringComparison.Ordinal);
    }
}
