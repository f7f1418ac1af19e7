// tokenizer_crosscheck.mjs: reference GPT-2 token ids from js-tiktoken (an independent port of OpenAI's
// tiktoken, with its own bundled copy of the gpt2 ranks), for test/test_tokenizer.cpp to compare against.
// Encodes the FineWeb-Edu sample, Tiny Shakespeare (each file as one text, where ../shared/data has them)
// and a list of tricky strings, and writes them with their ids to OUT_DIR/tokenizer_reference.json.
//
// Usage: node test/tokenizer_crosscheck.mjs MODULES_DIR OUT_DIR
//   MODULES_DIR holds node_modules/js-tiktoken (the Makefile installs it under build/).
// The strings avoid U+0085 and U+FEFF: JavaScript's \s disagrees with Unicode's White_Space (which
// tiktoken uses) on exactly those two, so the C++ tests check them on their own.
import { createRequire } from "node:module";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

const [modulesDir, outDir] = process.argv.slice(2);
if (!modulesDir || !outDir) {
    console.error("usage: node test/tokenizer_crosscheck.mjs MODULES_DIR OUT_DIR");
    process.exit(2);
}
const require = createRequire(path.resolve(modulesDir) + "/");
const { Tiktoken } = require("js-tiktoken/lite");
const gpt2 = require("js-tiktoken/ranks/gpt2");
const packageJson = path.join(modulesDir, "node_modules/js-tiktoken/package.json");
const version = JSON.parse(readFileSync(packageJson, "utf8")).version;
const encoding = new Tiktoken(gpt2.default ?? gpt2);
// no special tokens: "<|endoftext|>" in the text is ordinary text, as in focus::Tokenizer::encode
const encode = (text) => encoding.encode(text, [], []);

// ../shared/data is absent on a user's machine: the tricky strings are then the whole cross-check
const sharedFiles = ["../shared/data/fineweb_edu_sample.txt", "../shared/data/tinyshakespeare.txt"];
const files = sharedFiles.filter((file) => existsSync(file));
if (files.length < sharedFiles.length) console.log("../shared/data not found: cross-checking the strings only");

const trickyStrings = [
    // contractions: only lower-case 's 't 're 've 'm 'll 'd split off
    "I'm sure you're right, they've said we'll see what he'd do; it's John's.",
    "IT'S DON'T WE'LL", "rock'n'roll", "''s", "'", "'sup", " 's", "O'Neil's 'quoted' words'",
    // digits and numbers of other scripts
    "123456789012345678901234567890", "3.14159 and 1,000,000 and 2024-01-31", " 42", "a1b2c3",
    "٣٤٥ ½ Ⅻ ² ⅞", "x²+y²=z²",
    // whitespace runs, trailing spaces, newlines, tabs
    "a  b", "a   b", "a    b", "  leading", "trailing ", "trailing   ", "   ", " ", "\t\ttabs\tand\tmore",
    "line one\nline two\n\nparagraph\n\n\n", "windows\r\nline\r\n", " \n ", "x \n\n y", "\n", "\n\n\nHello",
    "end with newline\n", "spaces before newline   \nnext", "a \u00a0b\u3000c\u2028d\u2003e",
    // letters beyond ASCII, combining marks
    "café naïve résumé façade", "中文字符和标点。", "Ελληνικά γράμματα", "русский текст", "日本語のテキスト",
    "한국어 문장", "עברית", "العربية", "हिन्दी भाषा", "e\u0301 (e + combining acute)", "ＡＢＣ全角１２３",
    "𝐀𝐁𝐂 𐍈 math and gothic letters",
    // emoji and symbols, joiners
    "👋🌍", "I ❤️ NY", "👨‍👩‍👧‍👦 family", "🇺🇸🇫🇷 flags", "🙂🙂🙂", "a\u200db", "±∞≠≈ ©®™ €£¥",
    // punctuation and markup
    "Hello world", "Hello, world!", "...!!!???", "—em dash– en dash", "«guillemets» „quotes“", "$100.00",
    "#hashtag @user https://example.com/path?q=1&r=2", "<|endoftext|>", "a<|endoftext|>b",
    "def f(x):\n    return x**2\n", "if (a && b) { c++; }\n\treturn;", "<div class=\"x\">text</div>",
    // long runs of one class
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "!!!!!!!!!!!!!!!!!!!!", "=".repeat(200), " ".repeat(100) + "x",
    "-".repeat(50) + "\n" + "_".repeat(50),
];

const cases = files.map((file) => ({ file, ids: encode(readFileSync(file, "utf8")) }));
for (const text of trickyStrings) cases.push({ text, ids: encode(text) });

mkdirSync(outDir, { recursive: true });
const out = path.join(outDir, "tokenizer_reference.json");
writeFileSync(out, JSON.stringify({ js_tiktoken: version, cases }));
console.log(`wrote ${out}: js-tiktoken ${version}, ${cases.length} cases`);
