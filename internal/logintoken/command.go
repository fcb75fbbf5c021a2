package logintoken

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/keel-registry/keel/internal/jwtkey"
)

// usage is the help text of "keel token".
const usage = `usage:
  keel token keygen [-alg ES256|EdDSA|RS256] [-out private-key-file]
      makes a key pair; prints the public key (PKIX, base64), and the private
      key (PKCS#8, base64) too unless -out names a file (mode 0600) for it
  keel token issue -key <base64|@file> -sub <subject> -iss <issuer> -aud <audience>
      -cap pull,push,delete,catalog [-repo 'team/*' ...] [-ttl 1h] [-alg ...]
      prints a signed login token; send it as the password of a basic login
`

// Main runs "keel token" with args (the words after "token"), printing
// results to stdout and help to stderr.
func Main(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("token: a subcommand is required (keygen or issue)")
	}
	switch args[0] {
	case "keygen":
		return keygen(args[1:], stdout, stderr)
	case "issue":
		return issue(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stderr, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("token: unknown subcommand %q", args[0])
}

func keygen(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("keel token keygen", flag.ContinueOnError)
	flags.SetOutput(stderr)
	algName := flags.String("alg", string(jwtkey.ES256), "algorithm: ES256, EdDSA or RS256")
	out := flags.String("out", "", "file to write the private key to (created, mode 0600); "+
		"default: print it")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	alg, err := jwtkey.ParseAlgorithm(*algName)
	if err != nil {
		return err
	}

	key, err := jwtkey.Generate(alg)
	if err != nil {
		return err
	}
	private, err := jwtkey.EncodePrivateKey(key)
	if err != nil {
		return err
	}
	public, err := jwtkey.EncodePublicKey(key.Public())
	if err != nil {
		return err
	}
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("token keygen: %w", err)
		}
		_, werr := fmt.Fprintln(f, private)
		if err := errors.Join(werr, f.Close()); err != nil {
			return fmt.Errorf("token keygen: write %s: %w", *out, err)
		}
	} else {
		_, err = fmt.Fprintf(stdout, "# %s private key (PKCS#8, base64): keep it secret; "+
			"it signs login tokens.\nprivate-key: %s\n", alg, private)
		if err != nil {
			return err
		}
	}
	_, err = fmt.Fprintf(stdout, "# Public key (PKIX, base64): set it as KEEL_JWT_PUBLIC_KEY, "+
		"with KEEL_JWT_ALGORITHM=%s.\npublic-key: %s\n", alg, public)
	return err
}

func issue(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("keel token issue", flag.ContinueOnError)
	flags.SetOutput(stderr)
	keyArg := flags.String("key", "", "private key: base64 PKCS#8 (DER or PEM), or @file")
	algName := flags.String("alg", "", "algorithm; default: the one the key is for")
	sub := flags.String("sub", "", "subject (sub), the name the policy knows")
	iss := flags.String("iss", "", "issuer (iss), as in KEEL_JWT_ISSUER")
	aud := flags.String("aud", "", "audience (aud), as in KEEL_JWT_AUDIENCE")
	ttl := flags.Duration("ttl", time.Hour, "how long the token is valid")
	caps := flags.String("cap", "", "comma-separated capabilities: pull, push, delete, catalog")
	var repos multiFlag
	flags.Var(&repos, "repo", "repository pattern the token is limited to (repeatable, "+
		"or comma-separated); none means no limit beyond the policy")
	if err := parseFlags(flags, args); err != nil {
		return err
	}

	keyText, err := readKeyArg(*keyArg)
	if err != nil {
		return err
	}
	key, err := jwtkey.ParsePrivateKey(keyText)
	if err != nil {
		return err
	}
	opts := IssueOptions{
		Key:          key,
		Algorithm:    jwtkey.Algorithm(*algName),
		Subject:      *sub,
		Issuer:       *iss,
		Audience:     *aud,
		TTL:          *ttl,
		Repositories: repos,
	}
	for _, c := range splitList(*caps) {
		capability, err := ParseCapability(c)
		if err != nil {
			return err
		}
		opts.Capabilities = append(opts.Capabilities, capability)
	}

	token, err := Issue(opts)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, token)
	return err
}

// parseFlags parses args and refuses positional arguments.
func parseFlags(flags *flag.FlagSet, args []string) error {
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flags.Args())
	}
	return nil
}

// readKeyArg returns the key text of -key: the value itself, or the
// contents of the file after '@'. A file keeps the key off the command
// line, where other users of the machine could see it.
func readKeyArg(arg string) (string, error) {
	if arg == "" {
		return "", errors.New("token issue: -key is required")
	}
	path, isFile := strings.CutPrefix(arg, "@")
	if !isFile {
		return arg, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token issue: read the key: %w", err)
	}
	return string(b), nil
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// multiFlag collects a repeatable, comma-separated flag.
type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, ",") }

func (m *multiFlag) Set(v string) error {
	*m = append(*m, splitList(v)...)
	return nil
}
