namespace eMoE.Model;

/// <summary>Turns one pre-tokenized word into vocabulary ids.</summary>
internal interface IBpeModel
{
    /// <summary>Appends the ids of <paramref name="word"/> to <paramref name="ids"/>.</summary>
    void Encode(string word, List<int> ids);
}
