// Package querycli is keelctl, the command-line client of keel's query
// API: it lists repositories and tags, inspects manifests, lists referrers
// and follows the registry's changes, over gRPC straight to the manifest
// service or as JSON through the gateway, and prints tables or JSON.
package querycli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Environment variables that give flags their defaults.
const (
	EnvUsername = "KEEL_USERNAME"
	EnvPassword = "KEEL_PASSWORD"
)

// defaultTimeout bounds every command but watch.
const defaultTimeout = 30 * time.Second

// settings are the parsed flags.
type settings struct {
	grpc     string
	url      string
	username string
	password string
	output   string
	timeout  time.Duration

	pageSize     int
	pageToken    string
	all          bool
	artifactType string
	since        string
	repository   string
}

// env is what a command runs with.
type env struct {
	s      *settings
	client Client
	stdout io.Writer
	stderr io.Writer
}

// command is one subcommand.
type command struct {
	name    string
	args    string
	summary string
	// nargs is how many arguments it takes.
	nargs int
	// flags registers its own flags.
	flags func(fs *flag.FlagSet, s *settings)
	run   func(ctx context.Context, e *env, args []string) error
	// streams marks a command that runs until stopped, without a timeout.
	streams bool
}

// commands are keelctl's subcommands, in help order.
var commands = []command{
	{
		name: "repos", summary: "List the registry's repositories.",
		flags: pageFlags, run: runRepos,
	},
	{
		name: "tags", args: "<repo>", nargs: 1, summary: "List a repository's tags.",
		flags: pageFlags, run: runTags,
	},
	{
		name: "inspect", args: "<repo>:<tag>|<repo>@<digest>", nargs: 1,
		summary: "Show a manifest's config, layers, platforms and sizes. An image shows " +
			"its config and layers, an index its manifests and their platforms; both show " +
			"their media type, annotations, subject and total size.",
		run: runInspect,
	},
	{
		name: "referrers", args: "<repo>@<digest>", nargs: 1,
		summary: "List the manifests whose subject is a manifest (signatures, SBOMs...).",
		flags: func(fs *flag.FlagSet, s *settings) {
			fs.StringVar(&s.artifactType, "artifact-type", "",
				"list only referrers of this artifact type")
		},
		run: runReferrers,
	},
	{
		name: "watch", summary: "Follow pushes, tag moves and deletes as they happen " +
			"(until interrupted). Each change shows its cursor; pass it to --since to " +
			"resume after it.",
		flags: func(fs *flag.FlagSet, s *settings) {
			fs.StringVar(&s.since, "since", "", "resume after this cursor")
			fs.StringVar(&s.repository, "repository", "", "follow only this repository")
		},
		run: runWatch, streams: true,
	},
}

// pageFlags registers the paging flags of the list commands.
func pageFlags(fs *flag.FlagSet, s *settings) {
	fs.IntVar(&s.pageSize, "page-size", 0, "entries per page (default 100, at most 1000)")
	fs.StringVar(&s.pageToken, "page-token", "", "start at this page (from a previous run)")
	fs.BoolVar(&s.all, "all", false, "follow every page to the end")
}

// commonFlags registers the flags every command takes. Each takes its
// current value in s as its default, so that they may be given before the
// command and after it.
func commonFlags(fs *flag.FlagSet, s *settings) {
	fs.StringVar(&s.grpc, "grpc", s.grpc,
		"the manifest service's gRPC `host:port` (direct, without credentials)")
	fs.StringVar(&s.url, "url", s.url, "the gateway's `URL`, for the JSON API")
	fs.StringVar(&s.username, "username", s.username,
		"user name for --url (default $"+EnvUsername+")")
	fs.Var(secret{&s.password}, "password", "`password` for --url (default $"+EnvPassword+")")
	fs.StringVar(&s.output, "o", s.output, "output `format`: table or json")
	fs.StringVar(&s.output, "output", s.output, "same as -o")
	fs.DurationVar(&s.timeout, "timeout", s.timeout, "bound on a command other than watch")
}

// Run runs keelctl with args (without the program name), writing results
// to stdout and errors to stderr, and returns the exit status: 0, or 1 on
// any error. getenv reads the environment.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer,
	getenv func(string) string,
) int {
	if err := run(ctx, args, stdout, stderr, getenv); err != nil {
		fmt.Fprintln(stderr, "keelctl:", describe(err))
		return 1
	}
	return 0
}

// run parses the command line and runs the command it names.
func run(ctx context.Context, args []string, stdout, stderr io.Writer,
	getenv func(string) string,
) error {
	s := &settings{output: "table", timeout: defaultTimeout}
	top := flag.NewFlagSet("keelctl", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	commonFlags(top, s)
	if err := top.Parse(args); errors.Is(err, flag.ErrHelp) {
		printUsage(stdout, top)
		return nil
	} else if err != nil {
		return usageError{err}
	}
	if top.NArg() == 0 {
		return usageError{errors.New("no command given")}
	}

	name := top.Arg(0)
	cmd, ok := findCommand(name)
	if !ok {
		return usageError{fmt.Errorf("unknown command %q", name)}
	}
	fs := flag.NewFlagSet("keelctl "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	commonFlags(fs, s)
	if cmd.flags != nil {
		cmd.flags(fs, s)
	}
	cmdArgs, err := parseInterspersed(fs, top.Args()[1:])
	if errors.Is(err, flag.ErrHelp) {
		printCommandUsage(stdout, cmd, fs)
		return nil
	} else if err != nil {
		return usageError{err}
	}
	if len(cmdArgs) != cmd.nargs {
		return usageError{fmt.Errorf("%s takes %d argument(s) (%s), got %d", name, cmd.nargs,
			cmd.args, len(cmdArgs))}
	}
	if s.username == "" {
		s.username = getenv(EnvUsername)
	}
	if s.password == "" {
		s.password = getenv(EnvPassword)
	}
	if err := s.validate(); err != nil {
		return usageError{err}
	}

	client, err := s.connect()
	if err != nil {
		return err
	}
	defer client.Close()
	if !cmd.streams {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	return cmd.run(ctx, &env{s: s, client: client, stdout: stdout, stderr: stderr}, cmdArgs)
}

// secret is a string flag whose value help never shows.
type secret struct{ p *string }

func (s secret) String() string { return "" }

func (s secret) Set(v string) error {
	*s.p = v
	return nil
}

// usageError is a mistake on the command line.
type usageError struct{ err error }

func (e usageError) Error() string {
	return e.err.Error() + ` (see "keelctl --help")`
}

func (e usageError) Unwrap() error { return e.err }

// findCommand returns the command called name.
func findCommand(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// parseInterspersed parses fs's flags anywhere in args, as kubectl and
// docker do, and returns the other arguments in order. Everything after
// "--" is an argument.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var out []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(out, rest...), nil
		}
		if len(rest) == 0 {
			return out, nil
		}
		out = append(out, rest[0])
		args = rest[1:]
	}
}

// validate checks the flags that do not depend on the command.
func (s *settings) validate() error {
	switch {
	case s.grpc == "" && s.url == "":
		return errors.New("say where the registry is: --grpc host:port or --url URL")
	case s.grpc != "" && s.url != "":
		return errors.New("--grpc and --url are exclusive")
	case s.output != "table" && s.output != "json":
		return fmt.Errorf("output format %q is neither table nor json", s.output)
	case s.pageSize < 0 || s.pageSize > math.MaxInt32:
		return fmt.Errorf("page size %d is out of range", s.pageSize)
	case s.timeout <= 0:
		return fmt.Errorf("timeout %v is not positive", s.timeout)
	}
	return nil
}

// connect returns the client the flags ask for.
func (s *settings) connect() (Client, error) {
	if s.grpc != "" {
		return DialGRPC(s.grpc)
	}
	return NewHTTP(s.url, s.username, s.password)
}

// printUsage writes keelctl's help.
func printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, `keelctl asks a keel registry what it holds.

Usage:
  keelctl [flags] <command> [arguments] [flags]

Commands:
`)
	t := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	for _, c := range commands {
		short, _, _ := strings.Cut(c.summary, ". ")
		fmt.Fprintf(t, "  %s %s\t%s\n", c.name, c.args, strings.TrimSuffix(short, "."))
	}
	t.Flush()
	fmt.Fprint(w, `
Reach the registry with --grpc (the manifest service, no credentials) or
--url (the gateway's JSON API under /api/v1/, with --username and
--password or $KEEL_USERNAME and $KEEL_PASSWORD).

Flags:
`)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprint(w, "\nRun \"keelctl <command> --help\" for a command's own flags.\n")
}

// printCommandUsage writes a command's help.
func printCommandUsage(w io.Writer, c command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage:\n  keelctl %s %s [flags]\n\n%s\n\nFlags:\n",
		c.name, c.args, c.summary)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// describe writes err for a person: a status error's message with its OCI
// code or gRPC code, plus a hint for missing credentials.
func describe(err error) string {
	var ue usageError
	if errors.As(err, &ue) {
		return ue.Error()
	}
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	reason := st.Code().String()
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() != "" {
			reason = info.GetReason()
		}
	}
	msg := st.Message() + " (" + reason + ")"
	if st.Code() == codes.Unauthenticated {
		msg += "; give --username and --password, or set " + EnvUsername + " and " +
			EnvPassword
	}
	return strings.TrimSpace(msg)
}
