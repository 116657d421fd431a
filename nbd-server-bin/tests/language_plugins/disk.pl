# A 1 MiB disk in memory for nbdkit-perl-plugin(3): the first half is
# 4 KiB blocks of letters, the second half zeroes. Every callback the
# Perl plugin offers is here (it has no extents, FUA or cache).
use strict;
use warnings;

my $BLOCK = 4096;
my $disk = "";
$disk .= chr(65 + $_ % 26) x $BLOCK for 0 .. 127;
$disk .= "\0" x (128 * $BLOCK);

sub config
{
    my ($key, $value) = @_;
    die "unknown parameter $key" unless $key eq "label";
}

sub open { my $readonly = shift; return { readonly => $readonly }; }
sub close { }
sub get_size { return length $disk; }
sub can_write { return 1; }
sub can_flush { return 1; }
sub can_trim { return 1; }
sub is_rotational { return 0; }

sub pread
{
    my ($h, $count, $offset) = @_;
    return substr $disk, $offset, $count;
}

sub pwrite
{
    my ($h, $buf, $offset) = @_;
    die "the last block is read-only" if $offset >= length ($disk) - $BLOCK;
    substr ($disk, $offset, length $buf) = $buf;
}

sub flush { }

sub trim
{
    my ($h, $count, $offset) = @_;
    substr ($disk, $offset, $count) = "\0" x $count;
}

sub zero
{
    my ($h, $count, $offset) = @_;
    substr ($disk, $offset, $count) = "\0" x $count;
}
