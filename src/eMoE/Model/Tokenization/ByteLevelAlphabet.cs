namespace eMoE.Model;

/// <summary>
/// GPT-2's reversible byte-to-character table (bytes_to_unicode): printable Latin-1 bytes stand for
/// themselves, the other 68 bytes for U+0100 onwards, so that every byte is a visible vocabulary symbol.
/// </summary>
internal static class ByteLevelAlphabet
{
    private static readonly char[] s_byteToChar = BuildTable();
    private static readonly int[] s_charToByte = BuildInverse();

    /// <summary>The character that stands for <paramref name="b"/>.</summary>
    public static char ToChar(byte b) => s_byteToChar[b];

    /// <summary>The byte a character stands for, or false when it is not in the alphabet.</summary>
    public static bool TryGetByte(char c, out byte b)
    {
        if (c < s_charToByte.Length && s_charToByte[c] >= 0)
        {
            b = (byte)s_charToByte[c];
            return true;
        }

        b = 0;
        return false;
    }

    /// <summary>Maps the UTF-8 bytes of <paramref name="text"/> to their alphabet characters.</summary>
    public static string Map(string text)
    {
        byte[] utf8 = System.Text.Encoding.UTF8.GetBytes(text);
        return string.Create(utf8.Length, utf8, static (chars, bytes) =>
        {
            for (int i = 0; i < bytes.Length; i++)
            {
                chars[i] = s_byteToChar[bytes[i]];
            }
        });
    }

    private static char[] BuildTable()
    {
        var table = new char[256];
        int extra = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= 0x21 and <= 0x7E or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            table[b] = printable ? (char)b : (char)(256 + extra++);
        }

        return table;
    }

    private static int[] BuildInverse()
    {
        var inverse = new int[256 + 68];
        Array.Fill(inverse, -1);
        for (int b = 0; b < 256; b++)
        {
            inverse[s_byteToChar[b]] = b;
        }

        return inverse;
    }
}
